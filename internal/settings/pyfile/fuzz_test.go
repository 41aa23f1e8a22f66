package pyfile

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse checks that no file makes the reader panic or loop, that every
// error it returns names a line of the file, and that no error repeats a
// string literal of the file (a value may be a secret).
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"X = 'a' \"b\" '''c'''\nY = [1, -2.5e3, True, None, (), {'k': (1,)}]\n",
		"import os\nA = os.getcwd()\nB = f'{A}'\ndef f():\n  pass\n",
		"X = r\"\\",
		"X = b'\\xff\\777' u'\\U0001F600'",
		"X = (\n'a'\n'b' \\\n)",
		"A = B = 0x_1; C = 1_0",
		"X = [[[[[[[[[[]]]]]]]]]]",
		"X = {'a': 1, **y}",
		"X = f'Zq9SecretValueZq9'\nY = 'Zq9SecretValueZq9'.upper()\nZ = ['Zq9SecretValueZq9' 1]",
		"X = 'Zq9SecretValueZq9\nY = b'Zq9SecretValueZq9' 'x'",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		as, err := Parse("f.py", []byte(src))
		lines := strings.Count(src, "\n") + 1
		for _, a := range as {
			if a.Line < 1 || a.Line > lines {
				t.Fatalf("assignment %s on line %d of %d", a.Name, a.Line, lines)
			}
			if a.Name == "" {
				t.Fatal("assignment without a name")
			}
		}
		if err == nil {
			return
		}
		for _, e := range unwrap(err) {
			var le *LineError
			if !errors.As(e, &le) {
				t.Fatalf("error is not a LineError: %v", e)
			}
			if le.Line < 1 || le.Line > lines {
				t.Fatalf("error on line %d of %d: %v", le.Line, lines, le)
			}
		}
		// A literal of 12+ distinctive characters never reaches a message.
		const marker = "Zq9SecretValueZq9"
		if strings.Contains(src, marker) && strings.Contains(err.Error(), marker) {
			t.Fatalf("error repeats a value: %v", err)
		}
	})
}
