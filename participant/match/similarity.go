package match

import "unicode/utf8"

// String similarities the comparison levels are built from. They work on
// normalized values; each takes its arguments in a fixed order so that it is
// symmetric, and none allocates for ASCII strings of up to 64 bytes.

// isASCII reports whether s is all ASCII.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// jaroWinkler returns the Jaro-Winkler similarity of x and y in [0, 1]:
// Jaro's similarity, raised by 0.1 for each of up to four leading characters
// in common when it is above 0.7 (Winkler 1990).
func jaroWinkler(x, y string) float64 {
	if x == y {
		return 1
	}
	if x > y {
		x, y = y, x
	}
	if isASCII(x) && isASCII(y) {
		return jaroWinklerOf([]byte(x), []byte(y))
	}
	return jaroWinklerOf([]rune(x), []rune(y))
}

func jaroWinklerOf[T byte | rune](a, b []T) float64 {
	if len(a) == 0 || len(b) == 0 {
		return 0
	}
	if len(a) > len(b) {
		a, b = b, a
	}
	window := max(len(b)/2-1, 0)
	var abuf, bbuf [64]bool
	am, bm := abuf[:0], bbuf[:0]
	if len(b) > len(bbuf) {
		am, bm = make([]bool, len(a)), make([]bool, len(b))
	} else {
		am, bm = abuf[:len(a)], bbuf[:len(b)]
	}
	matches := 0
	for i := range a {
		lo, hi := max(0, i-window), min(len(b), i+window+1)
		for j := lo; j < hi; j++ {
			if !bm[j] && a[i] == b[j] {
				am[i], bm[j] = true, true
				matches++
				break
			}
		}
	}
	if matches == 0 {
		return 0
	}
	trans, j := 0, 0
	for i := range a {
		if !am[i] {
			continue
		}
		for !bm[j] {
			j++
		}
		if a[i] != b[j] {
			trans++
		}
		j++
	}
	m := float64(matches)
	jaro := (m/float64(len(a)) + m/float64(len(b)) + (m-float64(trans/2))/m) / 3
	if jaro <= 0.7 {
		return jaro
	}
	prefix := 0
	for prefix < min(4, len(a)) && a[prefix] == b[prefix] {
		prefix++
	}
	return jaro + float64(prefix)*0.1*(1-jaro)
}

// oneEdit reports whether x and y differ by exactly one edit: a letter
// inserted, deleted or replaced, or two adjacent letters swapped (the
// optimal string alignment distance is 1).
func oneEdit(x, y string) bool {
	if x == y {
		return false
	}
	if isASCII(x) && isASCII(y) {
		return oneEditOf([]byte(x), []byte(y))
	}
	return oneEditOf([]rune(x), []rune(y))
}

func oneEditOf[T byte | rune](a, b []T) bool {
	if len(a) > len(b) {
		a, b = b, a
	}
	if len(b)-len(a) > 1 {
		return false
	}
	i := 0
	for i < len(a) && a[i] == b[i] {
		i++
	}
	if len(a) < len(b) { // one insertion
		for ; i < len(a); i++ {
			if a[i] != b[i+1] {
				return false
			}
		}
		return true
	}
	// Same length: one substitution or one adjacent transposition.
	if i+1 < len(a) && a[i] == b[i+1] && a[i+1] == b[i] && equalFrom(a, b, i+2) {
		return true
	}
	return equalFrom(a, b, i+1)
}

func equalFrom[T byte | rune](a, b []T, i int) bool {
	for ; i < len(a); i++ {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// nysiis returns the NYSIIS phonetic code of a normalized name (Taft 1970,
// the New York State Identification and Intelligence System's name code,
// as Febrl and other record-linkage tools use it), up to six letters, or ""
// when the name does not start with a letter a-z. Only the letters a-z
// count.
func nysiis(name string) string {
	var w [48]byte
	n := 0
	for i := 0; i < len(name) && n < len(w); i++ {
		if c := name[i]; c >= 'a' && c <= 'z' {
			w[n] = c - 'a' + 'A'
			n++
		}
	}
	if n == 0 || name[0] < 'a' || name[0] > 'z' {
		return ""
	}
	s := w[:n]
	has := func(prefix string) bool { return len(s) >= len(prefix) && string(s[:len(prefix)]) == prefix }
	switch {
	case has("MAC"):
		s[1] = 'C'
	case has("KN"):
		s[0] = 'N'
	case has("K"):
		s[0] = 'C'
	case has("PH"), has("PF"):
		s[0], s[1] = 'F', 'F'
	case has("SCH"):
		s[1], s[2] = 'S', 'S'
	}
	if l := len(s); l >= 2 {
		switch string(s[l-2:]) {
		case "EE", "IE":
			s = append(s[:l-2], 'Y')
		case "DT", "RT", "RD", "NT", "ND":
			s = append(s[:l-2], 'D')
		}
	}
	vowel := func(c byte) bool { return c == 'A' || c == 'E' || c == 'I' || c == 'O' || c == 'U' }
	var out [48]byte
	key := append(out[:0], s[0])
	for i := 1; i < len(s); i++ {
		c := s[i]
		var rep []byte
		switch {
		case c == 'E' && i+1 < len(s) && s[i+1] == 'V':
			rep = []byte("AF")
		case vowel(c):
			rep = []byte("A")
		case c == 'Q':
			rep = []byte("G")
		case c == 'Z':
			rep = []byte("S")
		case c == 'M':
			rep = []byte("N")
		case c == 'K' && i+1 < len(s) && s[i+1] == 'N':
			rep = []byte("N")
		case c == 'K':
			rep = []byte("C")
		case c == 'S' && i+2 < len(s) && s[i+1] == 'C' && s[i+2] == 'H':
			rep = []byte("SSS")
		case c == 'P' && i+1 < len(s) && s[i+1] == 'H':
			rep = []byte("FF")
		case c == 'H' && (!vowel(s[i-1]) || i+1 < len(s) && !vowel(s[i+1])):
			rep = []byte{s[i-1]}
		case c == 'W' && vowel(s[i-1]):
			rep = []byte{s[i-1]}
		default:
			rep = []byte{c}
		}
		// The replacement overwrites the name from i on, as in the
		// original description, so "SCH" codes its S and C once.
		copy(s[i:], rep)
		if len(rep) > 1 {
			c = s[i]
		} else {
			c = rep[0]
		}
		if c != key[len(key)-1] {
			key = append(key, c)
		}
	}
	if l := len(key); l > 1 && key[l-1] == 'S' {
		key = key[:l-1]
	}
	if l := len(key); l > 2 && key[l-2] == 'A' && key[l-1] == 'Y' {
		key = append(key[:l-2], 'Y')
	}
	if l := len(key); l > 1 && key[l-1] == 'A' {
		key = key[:l-1]
	}
	if len(key) > 6 {
		key = key[:6]
	}
	return string(key)
}
