package flaskconvert

import "testing"

// FuzzParsePythonSettings checks that no settings file makes the reader
// panic, and that what it reads converts without panicking either.
func FuzzParsePythonSettings(f *testing.F) {
	f.Add(pythonSettings)
	f.Add("X = r\"\\")
	f.Add("X = '''a'''\nY = [\"a\", 'b',]\nZ = (\"a\")\n")
	f.Add("TOKEN_PROVIDERS = \"a\"\nA_CLIENT_ID = [\"x\"]\n")
	f.Fuzz(func(t *testing.T, data string) {
		s := ParsePythonSettings("f.py", []byte(data))
		_ = s.Problems()
		if r, err := Convert(s, Options{}); err == nil {
			if _, err := r.YAML(); err != nil {
				t.Fatal(err)
			}
		}
	})
}
