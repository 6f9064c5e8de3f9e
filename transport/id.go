package transport

import (
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
)

// An ID names a node: the SHA-256 of its certificate (DER).
//
// Its text form is base32 (RFC 4648 alphabet, no padding) split into four
// parts of 13 characters, each followed by a Luhn mod 32 check character,
// and printed in eight groups of seven joined by '-':
//
//	MFRGGZD-FMZTGNB-...
//
// The check characters let [ParseID] catch most single-character typos and
// swapped neighbours when a person copies an ID by hand.
type ID [32]byte

// ErrInvalidID is wrapped by every error [ParseID] returns.
var ErrInvalidID = errors.New("invalid node ID")

const (
	idAlphabet   = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	idRawLen     = 52 // base32 characters of 32 bytes, no padding
	idPartLen    = 13 // each part carries one check character
	idParts      = idRawLen / idPartLen
	idCheckedLen = idRawLen + idParts
	idGroupLen   = 7
)

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// idOf returns the ID of a certificate given in DER.
func idOf(der []byte) ID { return sha256.Sum256(der) }

// String returns the ID in eight dash-separated groups of seven characters.
func (id ID) String() string {
	raw := idEncoding.EncodeToString(id[:])
	checked := make([]byte, 0, idCheckedLen)
	for p := range idParts {
		part := raw[p*idPartLen : (p+1)*idPartLen]
		checked = append(checked, part...)
		checked = append(checked, luhn32(part))
	}
	var b strings.Builder
	b.Grow(idCheckedLen + idCheckedLen/idGroupLen - 1)
	for i := 0; i < len(checked); i += idGroupLen {
		if i > 0 {
			b.WriteByte('-')
		}
		b.Write(checked[i : i+idGroupLen])
	}
	return b.String()
}

// IsZero reports whether id is the zero ID, which names no node.
func (id ID) IsZero() bool { return id == ID{} }

// MarshalText implements [encoding.TextMarshaler] with the form of [ID.String].
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements [encoding.TextUnmarshaler] with [ParseID].
func (id *ID) UnmarshalText(text []byte) error {
	parsed, err := ParseID(string(text))
	if err != nil {
		return err
	}
	*id = parsed
	return nil
}

// ParseID parses what [ID.String] prints. It is forgiving where that cannot
// hide a typo: case does not matter, dashes and white space may stand
// anywhere, and the digits 0, 1 and 8 (which base32 does not use) are read as
// the letters O, I and B. The 52-character form without check characters is
// accepted too.
func ParseID(s string) (ID, error) {
	norm, err := normalizeID(s)
	if err != nil {
		return ID{}, parseIDError(s, err)
	}
	switch len(norm) {
	case idCheckedLen:
		raw := make([]byte, 0, idRawLen)
		for p := range idParts {
			chunk := norm[p*(idPartLen+1) : (p+1)*(idPartLen+1)]
			part, check := chunk[:idPartLen], chunk[idPartLen]
			if luhn32(part) != check {
				return ID{}, parseIDError(s, fmt.Errorf("check character of part %d of 4 does not match: is there a typo?", p+1))
			}
			raw = append(raw, part...)
		}
		norm = string(raw)
	case idRawLen:
	default:
		return ID{}, parseIDError(s, fmt.Errorf("has %d characters, want %d (or %d without check characters)", len(norm), idCheckedLen, idRawLen))
	}
	var id ID
	n, err := idEncoding.Decode(id[:], []byte(norm))
	if err != nil || n != len(id) || idEncoding.EncodeToString(id[:]) != norm {
		// The last character holds 4 unused bits; only one spelling is valid.
		return ID{}, parseIDError(s, errors.New("not a valid encoding"))
	}
	return id, nil
}

// normalizeID drops separators, upper-cases ASCII letters and maps the digits
// base32 lacks to the letters they resemble.
func normalizeID(s string) (string, error) {
	b := make([]byte, 0, idCheckedLen)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '-' || c == ' ' || c == '\t' || c == '\n' || c == '\r':
			continue
		case 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case c == '0':
			c = 'O'
		case c == '1':
			c = 'I'
		case c == '8':
			c = 'B'
		}
		if strings.IndexByte(idAlphabet, c) < 0 {
			return "", fmt.Errorf("invalid character %q at byte %d", c, i)
		}
		b = append(b, c)
		if len(b) > idCheckedLen {
			return "", fmt.Errorf("too long: want %d characters", idCheckedLen)
		}
	}
	return string(b), nil
}

func parseIDError(s string, err error) error {
	const maxShown = 80
	if len(s) > maxShown {
		s = s[:maxShown] + "…"
	}
	return fmt.Errorf("%w %q: %w", ErrInvalidID, s, err)
}

// luhn32 returns the Luhn mod 32 check character of s, whose characters
// must all be in idAlphabet.
func luhn32(s string) byte {
	const n = len(idAlphabet)
	factor, sum := 2, 0
	for i := len(s) - 1; i >= 0; i-- {
		addend := factor * strings.IndexByte(idAlphabet, s[i])
		factor = 3 - factor // 2, 1, 2, 1, … from the right
		sum += addend/n + addend%n
	}
	return idAlphabet[(n-sum%n)%n]
}
