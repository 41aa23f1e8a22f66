package pyfile

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func parseOne(t *testing.T, src string) Value {
	t.Helper()
	as, err := Parse("s.py", []byte(src))
	if err != nil {
		t.Fatalf("Parse(%q): %v", src, err)
	}
	if len(as) != 1 {
		t.Fatalf("Parse(%q): %d assignments", src, len(as))
	}
	return as[0].Value
}

func str(s string) Value { return Value{Kind: String, Str: s} }

func TestLiterals(t *testing.T) {
	cases := []struct {
		src  string
		want Value
	}{
		{`X = "a"`, str("a")},
		{`X = 'a'  # comment`, str("a")},
		{`X = """a
b"""`, str("a\nb")},
		{`X = '''it's'''`, str("it's")},
		{`X = "a" 'b' """c"""`, str("abc")},
		{"X = (\n  \"a\"\n  \"b\"\n)", str("ab")},
		{"X = \"a\" \\\n  \"b\"", str("ab")},
		{`X = r"a\nb"`, str(`a\nb`)},
		{`X = u"\u00e9\x41\101\n\t\\\"\q"`, str("éAA\n\t\\\"\\q")},
		{`X = b"\xec]"`, Value{Kind: Bytes, Str: "\xec]"}},
		{`X = 42`, Value{Kind: Int, Str: "42"}},
		{`X = -1_000`, Value{Kind: Int, Str: "-1000"}},
		{`X = 0x1F`, Value{Kind: Int, Str: "31"}},
		{`X = 0o17`, Value{Kind: Int, Str: "15"}},
		{`X = 123456789012345678901234567890`, Value{Kind: Int, Str: "123456789012345678901234567890"}},
		{`X = 0.5`, Value{Kind: Float, Str: "0.5"}},
		{`X = -1e3`, Value{Kind: Float, Str: "-1e3"}},
		{`X = True`, Value{Kind: Bool, Bool: true}},
		{`X = False`, Value{Kind: Bool}},
		{`X = None`, Value{Kind: None}},
		{`X = ["a", 1,]`, Value{Kind: List, Items: []Value{str("a"), {Kind: Int, Str: "1"}}}},
		{`X = ()`, Value{Kind: Tuple}},
		{`X = ("a",)`, Value{Kind: Tuple, Items: []Value{str("a")}}},
		{`X = "a", "b"`, Value{Kind: Tuple, Items: []Value{str("a"), str("b")}}},
		{"X = {\n 'a': [1],\n \"b\": {},\n}", Value{Kind: Dict, Keys: []Value{str("a"), str("b")}, Items: []Value{{Kind: List, Items: []Value{{Kind: Int, Str: "1"}}}, {Kind: Dict}}}},
	}
	for _, c := range cases {
		if got := parseOne(t, c.src); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Parse(%q) = %#v, want %#v", c.src, got, c.want)
		}
	}
}

func TestStatements(t *testing.T) {
	src := `"""Module docstring."""
# comment

A = B = "x"; C = 1
pass
lower_case = {"not": "a setting, but read"}
`
	as, err := Parse("s.py", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range as {
		names = append(names, a.Name)
	}
	if want := []string{"A", "B", "C", "lower_case"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("names = %v, want %v", names, want)
	}
	if as[2].Line != 4 {
		t.Errorf("C on line %d, want 4", as[2].Line)
	}
}

// Everything the reader cannot know without running the file is an error
// naming its line (and its setting), and never the value; the lines that
// can be read still are.
func TestUnreadable(t *testing.T) {
	src := `import os
GOOD = "kept"
SQLALCHEMY_DATABASE_URI = "sqlite:////{}/x.db".format(os.getcwd())
SECRET = f"{GOOD}-hunter2"
LIFETIME = timedelta(days=31)
REF = GOOD
SUM = 1 + 2
def f(x):
    return x
    # the body is skipped, not reported line by line
SET = {"a", "b"}
X += "y"
AFTER = 'also kept'
`
	as, err := Parse("settings.py", []byte(src))
	if len(as) != 2 || as[0].Name != "GOOD" || as[1].Name != "AFTER" {
		t.Fatalf("readable lines: %+v", as)
	}
	var lines []int
	for _, e := range unwrap(err) {
		var le *LineError
		if !errors.As(e, &le) {
			t.Fatalf("not a LineError: %v", e)
		}
		lines = append(lines, le.Line)
	}
	if want := []int{1, 3, 4, 5, 6, 7, 8, 11, 12}; !reflect.DeepEqual(lines, want) {
		t.Fatalf("error lines = %v, want %v\n%v", lines, want, err)
	}
	msg := err.Error()
	for _, want := range []string{"settings.py:1: an import", "settings.py:4: SECRET: an f-string", "settings.py:5: LIFETIME: a function call (timedelta(...))", "settings.py:6: REF: a name", "settings.py:3: SQLALCHEMY_DATABASE_URI: an expression"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "hunter2") || strings.Contains(msg, "sqlite") {
		t.Errorf("error shows a value:\n%s", msg)
	}
}

func TestTokenizerErrors(t *testing.T) {
	for src, line := range map[string]int{
		"A = 'x'\nB = 'unterminated\nC = 1":       2,
		"A = 'x'\nB = [\n 1,\n":                   2,
		"A = 'x'\nB = \"\"\"never\n closed":       2,
		"A = 1\nB = $":                            2,
		"A = 1\nB = '\\N{BULLET}'":                2,
		"A = 1\nB = 1 \\ 2":                       2,
		"A = 1\n  B = 2":                          2,
		"A = 1\nB = 0777":                         2,
		"A = 1\nB = 1j":                           2,
		"A = 1\nB = {**x}":                        2,
		"A = 1\nB = ('a' b'b')":                   2,
		"A = 1\nB: str = 'x'":                     2,
		"A = 1\nB = 'a' if C else 'b'":            2,
		"A = 1\nB = [x for x in 'abc']":           2,
		"A = 1\nB = lambda: 1":                    2,
		"A = 1\nB = -'a'":                         2,
		"A = 1\nB = os.environ['X']":              2,
		"A = 1\nB = {'a' 1}":                      2,
		"A = 1\nB = \\\n  os.getcwd()":            3,
		"A = 1\n\nif True:\n    B = 1\nC = 2 3\n": 3,
	} {
		as, err := Parse("s.py", []byte(src))
		var le *LineError
		if !errors.As(err, &le) || le.Line != line {
			t.Errorf("Parse(%q): error %v, want one on line %d", src, err, line)
			continue
		}
		if len(as) == 0 || as[0].Name != "A" {
			t.Errorf("Parse(%q): line 1 was not read: %+v", src, as)
		}
	}
}

func unwrap(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}
