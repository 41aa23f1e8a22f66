package server

import (
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
)

// TestFormEncoded: formEncoded is mime.ParseMediaType's verdict, the
// exact spelling recognised without parsing.
func TestFormEncoded(t *testing.T) {
	for _, ct := range []string{"", formContentType, "application/x-www-form-urlencoded; charset=utf-8",
		"Application/X-WWW-Form-Urlencoded", " application/x-www-form-urlencoded ", "application/x-www-form-urlencoded;",
		"application/x-www-form-urlencoded; charset", "application/x-www-form-urlencoded;;", "application/json",
		"multipart/form-data; boundary=x", "application/x-www-form-urlencodedx", "application/x-www-form-urlencoded, text/plain"} {
		mt, _, _ := mime.ParseMediaType(ct)
		if got, want := formEncoded(ct), mt == formContentType; got != want {
			t.Errorf("formEncoded(%q) = %v, mime.ParseMediaType says %v", ct, got, want)
		}
	}
}

// TestReadForm: readForm gives what Request.ParseForm gives after the
// MaxBytesReader the exchange used to put on the body: the same values and
// an error for the same bodies (bad escapes, semicolons, too large), with
// Content-Length known, unknown (chunked) or shorter than the body's
// buffer.
func TestReadForm(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	long := strings.Repeat("x", maxFormBody)
	bodies := []string{"", "a=1", "grant_type=x&subject_token=eyJ.abc-_DEF.sig&audience=svc", "a=1&a=2&b=",
		"a=%zz", "a;b=1", "a=1;b=2", "a+b=c+d%20e&%41=%42", "=&&=", "x=" + long[:maxFormBody-2], "x=" + long[:maxFormBody-1], "x=" + long,
		"s=" + strings.Repeat("eyJhbGciOiJSUzI1NiJ9", 60)}
	for _, body := range bodies {
		for _, chunked := range []bool{false, true} {
			newReq := func() *http.Request {
				r := httptest.NewRequest(http.MethodPost, "/api/oauth2/token", strings.NewReader(body))
				r.Header.Set("Content-Type", formContentType)
				if chunked {
					r.ContentLength = -1
					r.Body = io.NopCloser(strings.NewReader(body))
				}
				return r
			}
			want := newReq()
			want.Body = http.MaxBytesReader(httptest.NewRecorder(), want.Body, maxFormBody)
			wantErr := want.ParseForm()

			c, _ := gin.CreateTestContext(httptest.NewRecorder())
			c.Request = newReq()
			got, err := readForm(c)
			name := body
			if len(name) > 40 {
				name = name[:40] + "…"
			}
			if (err != nil) != (wantErr != nil) {
				t.Errorf("%q (chunked %v): error %v, ParseForm's %v", name, chunked, err, wantErr)
				continue
			}
			if err == nil && (!reflect.DeepEqual(got, want.PostForm) || !reflect.DeepEqual(c.Request.PostForm, want.PostForm)) {
				t.Errorf("%q (chunked %v): %v, ParseForm's %v", name, chunked, got, want.PostForm)
			}
		}
	}
}
