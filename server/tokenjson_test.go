package server

import (
	"encoding/json"
	"testing"
)

// TestExchangeResponseJSON holds appendExchangeResponse to encoding/json's
// output for the same value: escapes, omitted expires_in and scope.
func TestExchangeResponseJSON(t *testing.T) {
	in, zero, neg := int64(3599), int64(0), int64(-5)
	strs := []string{"", "eyJhbGciOi.abc-_DEF", "a\"b\\c", "<script>&amp;</script>", "\x00\x01\x1f\x7f\b\f\n\r\t",
		"caf\u00e9 \u2028 \u2029 \U0001F600", "bad \xff\xfe utf8 \xe2\x82", "\u2027\u202a"}
	var cases []exchangeResponse
	for _, s := range strs {
		cases = append(cases,
			exchangeResponse{AccessToken: s, IssuedTokenType: TokenTypeAccessToken, TokenType: "Bearer"},
			exchangeResponse{AccessToken: "x", IssuedTokenType: s, TokenType: s, ExpiresIn: &in, Scope: s},
			exchangeResponse{AccessToken: s, IssuedTokenType: TokenTypeAccessToken, TokenType: s, ExpiresIn: &zero, Scope: "openid <profile> & \"email\""},
			exchangeResponse{AccessToken: s, TokenType: "Bearer", ExpiresIn: &neg})
	}
	for _, c := range cases {
		want, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendExchangeResponse(nil, &c); string(got) != string(want) {
			t.Errorf("appendExchangeResponse(%+v)\n got %s\nwant %s", c, got, want)
		}
	}
}
