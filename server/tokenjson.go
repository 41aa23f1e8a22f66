package server

import (
	"strconv"
	"unicode/utf8"
)

// appendExchangeResponse appends r as JSON, byte for byte what
// encoding/json (gin's c.JSON) writes for it: field order, expires_in and
// scope omitted when unset or empty (omitempty). The token exchange's
// answer is its workloads' hot path, where the reflection-driven encoder
// was about 5 % of serve's CPU; TestExchangeResponseJSON holds the two
// encodings equal.
func appendExchangeResponse(dst []byte, r *exchangeResponse) []byte {
	dst = append(dst, `{"access_token":`...)
	dst = appendJSONString(dst, r.AccessToken)
	dst = append(dst, `,"issued_token_type":`...)
	dst = appendJSONString(dst, r.IssuedTokenType)
	dst = append(dst, `,"token_type":`...)
	dst = appendJSONString(dst, r.TokenType)
	if r.ExpiresIn != nil {
		dst = append(dst, `,"expires_in":`...)
		dst = strconv.AppendInt(dst, *r.ExpiresIn, 10)
	}
	if r.Scope != "" {
		dst = append(dst, `,"scope":`...)
		dst = appendJSONString(dst, r.Scope)
	}
	return append(dst, '}')
}

const lowerHex = "0123456789abcdef"

// appendJSONString appends s as a JSON string the way encoding/json does
// with HTML escaping on (its default, and what c.JSON used): ", \ and
// control characters escaped, <, > and & as \u003c etc., invalid UTF-8 as
// \ufffd, U+2028 and U+2029 escaped.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', lowerHex[b>>4], lowerHex[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', lowerHex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
