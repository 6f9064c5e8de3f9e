package transport

import (
	"crypto/rand"
	"errors"
	"regexp"
	"strings"
	"testing"
)

func randomID(tb testing.TB) ID {
	tb.Helper()
	var id ID
	if _, err := rand.Read(id[:]); err != nil {
		tb.Fatal(err)
	}
	return id
}

var idForm = regexp.MustCompile(`^([A-Z2-7]{7}-){7}[A-Z2-7]{7}$`)

func TestIDRoundTrip(t *testing.T) {
	ids := []ID{{}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	for range 100 {
		ids = append(ids, randomID(t))
	}
	for _, id := range ids {
		s := id.String()
		if !idForm.MatchString(s) {
			t.Fatalf("String() = %q, want eight groups of seven", s)
		}
		raw := idEncoding.EncodeToString(id[:])
		spellings := []string{
			s,
			strings.ToLower(s),
			strings.ReplaceAll(s, "-", ""),
			"  " + strings.ReplaceAll(s, "-", " ") + "\n",
			strings.NewReplacer("O", "0", "I", "1", "B", "8").Replace(s),
			raw,
			strings.ToLower(raw),
		}
		for _, in := range spellings {
			got, err := ParseID(in)
			if err != nil {
				t.Fatalf("ParseID(%q): %v", in, err)
			}
			if got != id {
				t.Fatalf("ParseID(%q) = %s, want %s", in, got, id)
			}
		}
		text, err := id.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back ID
		if err := back.UnmarshalText(text); err != nil || back != id {
			t.Fatalf("UnmarshalText(MarshalText()) = %s, %v; want %s", back, err, id)
		}
	}
}

func TestParseIDRejects(t *testing.T) {
	valid := randomID(t).String()
	tests := []struct {
		name, in string
	}{
		{"empty", ""},
		{"separators only", "- -"},
		{"too short", valid[:len(valid)-1]},
		{"too long", valid + "A"},
		{"far too long", strings.Repeat(valid, 100)},
		{"invalid character", "9" + valid[1:]},
		{"punctuation", "!" + valid[1:]},
		{"non-ASCII", "É" + valid[2:]},
		{"hex", strings.Repeat("ab", 32)},
		{"unused bits set", idEncoding.EncodeToString(make([]byte, 32))[:51] + "B"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if id, err := ParseID(tt.in); !errors.Is(err, ErrInvalidID) {
				t.Fatalf("ParseID(%q) = %s, %v; want ErrInvalidID", tt.in, id, err)
			}
		})
	}
}

// TestParseIDCatchesTypos checks that every single-character change of a
// printed ID is refused rather than read as another ID.
func TestParseIDCatchesTypos(t *testing.T) {
	for range 10 {
		s := []byte(randomID(t).String())
		for i, orig := range s {
			if orig == '-' {
				continue
			}
			for _, c := range []byte(idAlphabet) {
				if c == orig {
					continue
				}
				s[i] = c
				if id, err := ParseID(string(s)); err == nil {
					t.Fatalf("ParseID(%q) with a typo at %d = %s, want an error", s, i, id)
				}
			}
			s[i] = orig
		}
	}
}

func TestLuhn32(t *testing.T) {
	// A worked example of Luhn mod N: the check character makes the
	// weighted sum, taken with the check character, divisible by 32.
	for range 100 {
		id := randomID(t)
		part := idEncoding.EncodeToString(id[:])[:idPartLen]
		full := part + string(luhn32(part))
		sum, factor := 0, 1
		for i := len(full) - 1; i >= 0; i-- {
			addend := factor * strings.IndexByte(idAlphabet, full[i])
			factor = 3 - factor
			sum += addend/32 + addend%32
		}
		if sum%32 != 0 {
			t.Fatalf("%q: weighted sum %d is not divisible by 32", full, sum)
		}
	}
}

func FuzzParseID(f *testing.F) {
	for _, id := range []ID{{}, {1, 2, 3}, randomID(f)} {
		s := id.String()
		f.Add(s)
		f.Add(strings.ToLower(s))
		f.Add(idEncoding.EncodeToString(id[:]))
	}
	f.Add("")
	f.Add("AAAAAAA-AAAAAAA")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidID) {
				t.Fatalf("ParseID(%q): error %v does not wrap ErrInvalidID", s, err)
			}
			return
		}
		printed := id.String()
		if !idForm.MatchString(printed) {
			t.Fatalf("String() = %q", printed)
		}
		again, err := ParseID(printed)
		if err != nil || again != id {
			t.Fatalf("ParseID(String()) = %s, %v; want %s", again, err, id)
		}
	})
}
