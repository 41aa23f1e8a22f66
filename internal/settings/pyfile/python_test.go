package pyfile

import (
	"encoding/json"
	"os"
	"reflect"
	"strconv"
	"testing"
)

// The Flask service's settings file (testdata/flask/settings.py, written by
// testdata/flask/generate.py) reads here as Python itself read it:
// settings.json is the script's dump of the file's upper-case globals after
// running it.
func TestSameAsPython(t *testing.T) {
	src, err := os.ReadFile("../../../testdata/flask/settings.py")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../../../testdata/flask/settings.json")
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	as, err := Parse("settings.py", src)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]any{}
	for _, a := range as {
		if isUpper(a.Name) {
			got[a.Name] = asJSON(t, a.Value)
		}
	}
	if !reflect.DeepEqual(got, want) {
		for k := range want {
			if !reflect.DeepEqual(got[k], want[k]) {
				t.Errorf("%s: got %#v, Python read %#v", k, got[k], want[k])
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				t.Errorf("%s: read here, not by Python", k)
			}
		}
	}
}

func isUpper(s string) bool {
	for _, r := range s {
		if r >= 'a' && r <= 'z' {
			return false
		}
	}
	return true
}

// asJSON renders v as encoding/json would decode Python's json.dump of it
// (bytes as latin-1 text, as the script writes them).
func asJSON(t *testing.T, v Value) any {
	switch v.Kind {
	case String:
		return v.Str
	case Bytes:
		r := make([]rune, 0, len(v.Str))
		for i := 0; i < len(v.Str); i++ {
			r = append(r, rune(v.Str[i]))
		}
		return string(r)
	case Int, Float:
		f, err := strconv.ParseFloat(v.Str, 64)
		if err != nil {
			t.Fatal(err)
		}
		return f
	case Bool:
		return v.Bool
	case None:
		return nil
	case List, Tuple:
		out := []any{}
		for _, it := range v.Items {
			out = append(out, asJSON(t, it))
		}
		return out
	}
	out := map[string]any{}
	for i, k := range v.Keys {
		out[k.Str] = asJSON(t, v.Items[i])
	}
	return out
}
