// Package pyfile reads the settings file of the Flask service: a Python
// module of NAME = value assignments, which Flask executed (from_pyfile).
//
// Nothing is executed here. Only the literal subset of Python is read:
// strings (single, double and triple quotes; r, u and b prefixes; adjacent
// literals concatenated, across lines inside brackets too), integers and
// floats (with a sign), True, False, None, lists, tuples and dicts of those.
// Any other statement or expression (an import, a function call, an
// f-string, a reference to a name, a def) is an error that names its line,
// since a value computed at run time cannot be known without running the
// file. Error messages name lines, settings and constructs, never values: a
// value may be a client secret.
package pyfile

import (
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Kind is the type of a literal.
type Kind int

const (
	String Kind = iota
	Bytes
	Int
	Float
	Bool
	None
	List
	Tuple
	Dict
)

func (k Kind) String() string {
	return [...]string{"string", "bytes", "integer", "float", "boolean", "None", "list", "tuple", "dict"}[k]
}

// Value is one Python literal.
type Value struct {
	Kind Kind
	// Str is the text of a String or Bytes, and the decimal (Int) or
	// literal (Float) text of a number.
	Str string
	// Bool of a Bool.
	Bool bool
	// Items of a List or Tuple; the values of a Dict, in order.
	Items []Value
	// Keys of a Dict, in order, one per item.
	Keys []Value
}

// Scalar renders a string, number, boolean or None as the text a setting
// takes (booleans as true/false, None as the empty string); ok is false for
// lists, tuples and dicts.
func (v Value) Scalar() (string, bool) {
	switch v.Kind {
	case String, Bytes, Int, Float:
		return v.Str, true
	case Bool:
		return strconv.FormatBool(v.Bool), true
	case None:
		return "", true
	}
	return "", false
}

// Assignment is one module-level NAME = value.
type Assignment struct {
	Name  string
	Line  int
	Value Value
}

// LineError is a statement that cannot be read without running the file.
type LineError struct {
	File string
	Line int
	// Name is the setting assigned, when the statement is an assignment.
	Name string
	Msg  string
}

func (e *LineError) Error() string {
	if e.Name != "" {
		return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Name, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// Parse reads every module-level assignment of src. file labels errors. The
// error, if any, joins one *LineError per statement that could not be read;
// the assignments that could be read are returned with it.
func Parse(file string, src []byte) ([]Assignment, error) {
	toks, terr := tokenize(src)
	p := &parser{file: file, toks: toks}
	var out []Assignment
	var errs []error
	// After a statement that could not be read, its indented block (the
	// body of a def or an if) is skipped without an error per line.
	skipping := false
	for !p.at(tEOF) {
		if p.at(tNewline) {
			p.pos++
			continue
		}
		if skipping && p.at(tIndent) {
			p.pos++
			p.skipStatement()
			continue
		}
		as, err := p.statement()
		if err != nil {
			errs = append(errs, err)
			p.skipStatement()
			skipping = true
			continue
		}
		skipping = false
		out = append(out, as...)
	}
	if terr != nil {
		terr.File = file
		errs = append(errs, terr)
	}
	return out, errors.Join(errs...)
}

type tokKind int

const (
	tEOF tokKind = iota
	tNewline
	tName
	tNumber
	tString
	tOp
	tIndent
)

type token struct {
	kind tokKind
	text string // name, operator, number text
	// string tokens: the decoded value, and whether it is bytes.
	str     string
	isBytes bool
	line    int
	// bad, for a string the reader refuses (an f-string), says why.
	bad string
}

// tokenize splits src into tokens. Newlines inside brackets and after a
// backslash are not tokens, as in Python. On an error (an unterminated
// string, a character Python would not accept) the tokens so far are
// returned, ending with a newline and EOF, so that the statements before
// it are still read.
func tokenize(src []byte) ([]token, *LineError) {
	s := string(src)
	var toks []token
	line, depth := 1, 0
	openLine := 0 // where the outermost open bracket is
	atLineStart := true
	fail := func(msg string) ([]token, *LineError) {
		// Drop the broken statement's tokens.
		for len(toks) > 0 && toks[len(toks)-1].kind != tNewline {
			toks = toks[:len(toks)-1]
		}
		toks = append(toks, token{kind: tEOF, line: line})
		return toks, &LineError{Line: line, Msg: msg}
	}
	for i := 0; i < len(s); {
		c := s[i]
		if atLineStart && depth == 0 {
			// Indentation at module level opens a block (or is an error);
			// blank and comment-only lines do not count.
			j := i
			for j < len(s) && (s[j] == ' ' || s[j] == '\t' || s[j] == '\f') {
				j++
			}
			blank := j >= len(s) || s[j] == '\n' || s[j] == '\r' || s[j] == '#'
			if j > i && !blank {
				toks = append(toks, token{kind: tIndent, line: line})
			}
			atLineStart = false
			i = j
			continue
		}
		switch {
		case c == '\n':
			if depth == 0 {
				toks = append(toks, token{kind: tNewline, line: line})
				atLineStart = true
			}
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '\\':
			if strings.HasPrefix(s[i:], "\\\n") {
				i += 2
				line++
			} else if strings.HasPrefix(s[i:], "\\\r\n") {
				i += 3
				line++
			} else {
				return fail("a backslash outside a string must end the line")
			}
		case c == '"' || c == '\'' || isNameStart(s, i):
			// A name, or a string with a prefix (r"", b'', f"").
			j := i
			for j < len(s) && isNameChar(s, j) {
				_, n := utf8.DecodeRuneInString(s[j:])
				j += n
			}
			if j < len(s) && (s[j] == '"' || s[j] == '\'') && j-i <= 2 && isStringPrefix(s[i:j]) {
				tok, end, lines, err := readString(s, i, j)
				if err != "" {
					return fail(err)
				}
				tok.line = line
				toks = append(toks, tok)
				line += lines
				i = end
				continue
			}
			toks = append(toks, token{kind: tName, text: s[i:j], line: line})
			i = j
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			j := i
			for j < len(s) && (isAlnum(s[j]) || s[j] == '_' || s[j] == '.' ||
				(s[j] == '+' || s[j] == '-') && j > i && (s[j-1] == 'e' || s[j-1] == 'E') && !strings.HasPrefix(strings.ToLower(s[i:]), "0x")) {
				j++
			}
			toks = append(toks, token{kind: tNumber, text: s[i:j], line: line})
			i = j
		default:
			op := string(c)
			for _, two := range []string{"**", "//", "==", "!=", "<=", ">=", "->", ":=", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "@=", "<<", ">>"} {
				if strings.HasPrefix(s[i:], two) {
					op = two
					break
				}
			}
			if len(op) == 1 && !strings.ContainsRune("()[]{},:;=+-*/%@&|^~<>.!", rune(c)) {
				if c >= utf8.RuneSelf {
					return fail("a character Python does not accept here")
				}
				return fail(fmt.Sprintf("the character %q is not Python", c))
			}
			switch op {
			case "(", "[", "{":
				if depth == 0 {
					openLine = line
				}
				depth++
			case ")", "]", "}":
				if depth > 0 {
					depth--
				}
			}
			toks = append(toks, token{kind: tOp, text: op, line: line})
			i += len(op)
		}
	}
	if depth > 0 {
		line = openLine
		return fail("a bracket opened here is never closed")
	}
	toks = append(toks, token{kind: tNewline, line: line}, token{kind: tEOF, line: line})
	return toks, nil
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isNameStart(s string, i int) bool {
	r, _ := utf8.DecodeRuneInString(s[i:])
	return r == '_' || unicode.IsLetter(r)
}

func isNameChar(s string, i int) bool {
	r, _ := utf8.DecodeRuneInString(s[i:])
	return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r)
}

func isStringPrefix(p string) bool {
	switch strings.ToLower(p) {
	case "", "r", "u", "b", "br", "rb", "f", "fr", "rf", "t", "tr", "rt":
		return true
	}
	return false
}

// readString reads the string literal whose prefix starts at start and
// whose quote is at q. It returns the token, the index after it, how many
// newlines it spans, and an error message.
func readString(s string, start, q int) (token, int, int, string) {
	prefix := strings.ToLower(s[start:q])
	raw := strings.Contains(prefix, "r")
	isBytes := strings.Contains(prefix, "b")
	quote := s[q : q+1]
	if strings.HasPrefix(s[q:], quote+quote+quote) {
		quote = quote + quote + quote
	}
	var b strings.Builder
	lines := 0
	i := q + len(quote)
	for {
		if i >= len(s) {
			return token{}, 0, 0, "a string is never closed"
		}
		if strings.HasPrefix(s[i:], quote) {
			i += len(quote)
			break
		}
		c := s[i]
		if c == '\n' {
			if len(quote) == 1 {
				return token{}, 0, 0, "a string is never closed on its line"
			}
			lines++
		}
		if c != '\\' {
			b.WriteByte(c)
			i++
			continue
		}
		if i+1 >= len(s) {
			return token{}, 0, 0, "a string is never closed"
		}
		e := s[i+1]
		if raw {
			// A backslash keeps the next character (a quote too) from ending
			// the literal; both stay.
			if e == '\n' {
				lines++
			}
			b.WriteByte(c)
			b.WriteByte(e)
			i += 2
			continue
		}
		i += 2
		switch e {
		case '\n':
			lines++ // a continued line: nothing is added
		case '\\', '\'', '"':
			b.WriteByte(e)
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case 'a':
			b.WriteByte('\a')
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'v':
			b.WriteByte('\v')
		case '0', '1', '2', '3', '4', '5', '6', '7':
			n, j := int(e-'0'), i
			for j < len(s) && j < i+2 && s[j] >= '0' && s[j] <= '7' {
				n = n*8 + int(s[j]-'0')
				j++
			}
			i = j
			if isBytes {
				b.WriteByte(byte(n))
			} else {
				b.WriteRune(rune(n))
			}
		case 'x', 'u', 'U':
			width := map[byte]int{'x': 2, 'u': 4, 'U': 8}[e]
			if isBytes && e != 'x' {
				b.WriteByte('\\')
				b.WriteByte(e)
				continue
			}
			if i+width > len(s) {
				return token{}, 0, 0, fmt.Sprintf("a \\%c escape needs %d hex digits", e, width)
			}
			n, err := strconv.ParseUint(s[i:i+width], 16, 32)
			if err != nil {
				return token{}, 0, 0, fmt.Sprintf("a \\%c escape needs %d hex digits", e, width)
			}
			i += width
			switch {
			case isBytes:
				b.WriteByte(byte(n))
			case n > unicode.MaxRune:
				return token{}, 0, 0, "a \\U escape beyond Unicode"
			default:
				b.WriteRune(rune(n))
			}
		case 'N':
			if !isBytes {
				return token{}, 0, 0, "a \\N{...} escape (write the character itself)"
			}
			b.WriteByte('\\')
			b.WriteByte(e)
		default:
			// Python keeps unknown escapes as they are.
			b.WriteByte('\\')
			b.WriteByte(e)
		}
	}
	tok := token{kind: tString, str: b.String(), isBytes: isBytes}
	if strings.ContainsAny(prefix, "ft") {
		tok.bad = "an f-string (or t-string) is computed when the file runs"
	}
	return tok, i, lines, ""
}

type parser struct {
	file string
	toks []token
	pos  int
}

func (p *parser) peek() token       { return p.toks[p.pos] }
func (p *parser) at(k tokKind) bool { return p.toks[p.pos].kind == k }
func (p *parser) atOp(op string) bool {
	t := p.toks[p.pos]
	return t.kind == tOp && t.text == op
}

func (p *parser) skipStatement() {
	for !p.at(tEOF) && !p.at(tNewline) {
		if p.atOp(";") {
			p.pos++
			return
		}
		p.pos++
	}
}

func (p *parser) errorf(line int, name, format string, args ...any) *LineError {
	return &LineError{File: p.file, Line: line, Name: name, Msg: fmt.Sprintf(format, args...)}
}

// statements that are never assignments, by their first word.
var keywords = map[string]string{
	"import": "an import", "from": "an import", "def": "a function definition",
	"class": "a class definition", "if": "an if statement", "for": "a loop",
	"while": "a loop", "with": "a with statement", "try": "a try statement",
	"del": "a del statement", "assert": "an assert statement", "global": "a global statement",
	"async": "an async statement", "lambda": "a lambda", "match": "a match statement",
	"raise": "a raise statement", "pass": "", "return": "a return statement",
}

// statement reads one simple statement up to its newline or semicolon:
// NAME = [NAME =]... value, or a bare string (a docstring), or pass.
func (p *parser) statement() ([]Assignment, error) {
	t := p.peek()
	if t.kind == tIndent {
		return nil, p.errorf(t.line, "", "an indented block; only module-level NAME = value lines can be read")
	}
	if t.kind == tString && t.bad == "" {
		// A docstring or other bare string: no effect.
		if _, err := p.value(""); err != nil {
			return nil, err
		}
		return nil, p.endStatement("")
	}
	if t.kind == tName {
		if what, ok := keywords[t.text]; ok && !(p.toks[p.pos+1].kind == tOp && p.toks[p.pos+1].text == "=") {
			if what == "" {
				p.pos++
				return nil, p.endStatement("")
			}
			return nil, p.errorf(t.line, "", "%s cannot be read without running the file", what)
		}
	}
	var names []string
	for p.at(tName) && p.toks[p.pos+1].kind == tOp && p.toks[p.pos+1].text == "=" {
		names = append(names, p.peek().text)
		p.pos += 2
	}
	if len(names) == 0 {
		if p.at(tName) && p.toks[p.pos+1].kind == tOp && (strings.HasSuffix(p.toks[p.pos+1].text, "=") || p.toks[p.pos+1].text == ":") {
			return nil, p.errorf(t.line, t.text, "only NAME = value assignments can be read (not %q)", p.toks[p.pos+1].text)
		}
		return nil, p.errorf(t.line, "", "not a NAME = value assignment; it cannot be read without running the file")
	}
	name := names[len(names)-1]
	line := p.peek().line
	v, err := p.tupleOrValue(name)
	if err != nil {
		return nil, err
	}
	if err := p.endStatement(name); err != nil {
		return nil, err
	}
	out := make([]Assignment, 0, len(names))
	for _, n := range names {
		out = append(out, Assignment{Name: n, Line: line, Value: v})
	}
	return out, nil
}

func (p *parser) endStatement(name string) error {
	switch {
	case p.at(tNewline), p.at(tEOF):
		return nil
	case p.atOp(";"):
		p.pos++
		return nil
	}
	return p.errorf(p.peek().line, name, "%s after the value; only a literal value can be read", describe(p.peek()))
}

// tupleOrValue reads a value, or a bare tuple (X = 1, 2).
func (p *parser) tupleOrValue(name string) (Value, error) {
	v, err := p.value(name)
	if err != nil || !p.atOp(",") {
		return v, err
	}
	items := []Value{v}
	for p.atOp(",") {
		p.pos++
		if p.at(tNewline) || p.at(tEOF) || p.atOp(";") {
			break
		}
		v, err := p.value(name)
		if err != nil {
			return Value{}, err
		}
		items = append(items, v)
	}
	return Value{Kind: Tuple, Items: items}, nil
}

func describe(t token) string {
	switch t.kind {
	case tName:
		// Names are not quoted: an unquoted value (SECRET_KEY = hunter2)
		// reads as a name, and must not reach a message.
		return "a name"
	case tOp:
		return fmt.Sprintf("%q", t.text)
	case tNumber:
		return "a number"
	case tString:
		return "a string"
	case tIndent:
		return "an indented line"
	}
	return "the end of the line"
}

// maxDepth bounds nesting, so that a hostile file cannot exhaust the stack.
const maxDepth = 100

// value reads one literal.
func (p *parser) value(name string) (Value, error) {
	return p.valueDepth(name, 0)
}

func (p *parser) valueDepth(name string, depth int) (Value, error) {
	if depth > maxDepth {
		return Value{}, p.errorf(p.peek().line, name, "values nested more than %d deep", maxDepth)
	}
	t := p.peek()
	switch t.kind {
	case tString:
		return p.strings(name)
	case tNumber:
		p.pos++
		return p.number(name, t, false)
	case tName:
		p.pos++
		var v Value
		switch t.text {
		case "True":
			v = Value{Kind: Bool, Bool: true}
		case "False":
			v = Value{Kind: Bool}
		case "None":
			v = Value{Kind: None}
		default:
			if p.atOp("(") {
				if t.text == "timedelta" {
					return Value{}, p.errorf(t.line, name, "a function call (timedelta(...)) is computed when the file runs; write the number of seconds")
				}
				return Value{}, p.errorf(t.line, name, "a function call is computed when the file runs; write the value itself")
			}
			return Value{}, p.errorf(t.line, name, "a name (a reference to another value, or a value without quotes) is computed when the file runs; write the value itself, quoted if it is text")
		}
		return v, p.noOperator(name)
	case tOp:
		switch t.text {
		case "-", "+":
			p.pos++
			n := p.peek()
			if n.kind != tNumber {
				return Value{}, p.errorf(t.line, name, "an expression (%s applied to %s); write the value itself", t.text, describe(n))
			}
			p.pos++
			return p.number(name, n, t.text == "-")
		case "[", "(":
			return p.sequence(name, depth)
		case "{":
			return p.dict(name, depth)
		}
	}
	return Value{}, p.errorf(t.line, name, "%s is not a literal value", describe(t))
}

// noOperator refuses an operator after a value (1 + 2, "a" % x, x.y).
func (p *parser) noOperator(name string) error {
	t := p.peek()
	if t.kind == tOp && !strings.Contains(",:;)]}=", t.text) {
		return p.errorf(t.line, name, "an expression (%s); write the value itself", describe(t))
	}
	if t.kind == tName || t.kind == tNumber || t.kind == tString {
		return p.errorf(t.line, name, "%s after a value; write one literal value", describe(t))
	}
	return nil
}

// strings reads adjacent string literals and concatenates them.
func (p *parser) strings(name string) (Value, error) {
	var b strings.Builder
	first := p.peek()
	for p.at(tString) {
		t := p.peek()
		if t.bad != "" {
			return Value{}, p.errorf(t.line, name, "%s", t.bad)
		}
		if t.isBytes != first.isBytes {
			return Value{}, p.errorf(t.line, name, "bytes and text literals cannot be joined")
		}
		b.WriteString(t.str)
		p.pos++
	}
	kind := String
	if first.isBytes {
		kind = Bytes
	}
	return Value{Kind: kind, Str: b.String()}, p.noOperator(name)
}

// number reads an integer or float literal.
func (p *parser) number(name string, t token, neg bool) (Value, error) {
	text := strings.ReplaceAll(t.text, "_", "")
	if strings.Contains(t.text, "__") || strings.HasSuffix(t.text, "_") {
		return Value{}, p.errorf(t.line, name, "a malformed number")
	}
	sign := ""
	if neg {
		sign = "-"
	}
	lower := strings.ToLower(text)
	if strings.HasSuffix(lower, "j") {
		return Value{}, p.errorf(t.line, name, "a complex number cannot be a setting")
	}
	base := 10
	digits := text
	switch {
	case strings.HasPrefix(lower, "0x"):
		base, digits = 16, text[2:]
	case strings.HasPrefix(lower, "0o"):
		base, digits = 8, text[2:]
	case strings.HasPrefix(lower, "0b"):
		base, digits = 2, text[2:]
	}
	if n, ok := new(big.Int).SetString(digits, base); ok && digits != "" && digits[0] != '+' && digits[0] != '-' {
		if base == 10 && len(digits) > 1 && digits[0] == '0' && n.Sign() != 0 {
			return Value{}, p.errorf(t.line, name, "a malformed number (leading zero)")
		}
		if neg {
			n.Neg(n)
		}
		return Value{Kind: Int, Str: n.String()}, p.noOperator(name)
	}
	if base == 10 && !strings.ContainsAny(lower, "xob") {
		if _, err := strconv.ParseFloat(text, 64); err == nil || errors.Is(err, strconv.ErrRange) {
			if !strings.ContainsAny(lower, "inf") {
				return Value{Kind: Float, Str: sign + text}, p.noOperator(name)
			}
		}
	}
	return Value{}, p.errorf(t.line, name, "a malformed number")
}

// sequence reads a list [..] or a tuple (..); a parenthesised single value
// without a comma is that value, as in Python.
func (p *parser) sequence(name string, depth int) (Value, error) {
	open := p.peek()
	closer := "]"
	if open.text == "(" {
		closer = ")"
	}
	p.pos++
	var items []Value
	comma := false
	for !p.atOp(closer) {
		v, err := p.valueDepth(name, depth+1)
		if err != nil {
			return Value{}, err
		}
		items = append(items, v)
		if p.atOp(",") {
			comma = true
			p.pos++
			continue
		}
		if !p.atOp(closer) {
			return Value{}, p.errorf(p.peek().line, name, "%s inside a list; only literal values separated by commas can be read", describe(p.peek()))
		}
	}
	p.pos++
	if closer == ")" && len(items) == 1 && !comma {
		return items[0], p.noOperator(name)
	}
	kind := List
	if closer == ")" {
		kind = Tuple
	}
	return Value{Kind: kind, Items: items}, p.noOperator(name)
}

// dict reads {key: value, ...}.
func (p *parser) dict(name string, depth int) (Value, error) {
	p.pos++
	v := Value{Kind: Dict}
	for !p.atOp("}") {
		if p.atOp("**") {
			return Value{}, p.errorf(p.peek().line, name, "a ** expansion is computed when the file runs")
		}
		k, err := p.valueDepth(name, depth+1)
		if err != nil {
			return Value{}, err
		}
		if !p.atOp(":") {
			return Value{}, p.errorf(p.peek().line, name, "a set or an expression in braces; only a dict {key: value} can be read")
		}
		p.pos++
		val, err := p.valueDepth(name, depth+1)
		if err != nil {
			return Value{}, err
		}
		v.Keys = append(v.Keys, k)
		v.Items = append(v.Items, val)
		if p.atOp(",") {
			p.pos++
			continue
		}
		if !p.atOp("}") {
			return Value{}, p.errorf(p.peek().line, name, "%s inside a dict; only key: value pairs separated by commas can be read", describe(p.peek()))
		}
	}
	p.pos++
	return v, p.noOperator(name)
}
