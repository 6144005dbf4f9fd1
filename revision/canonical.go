package revision

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"unicode/utf16"
	"unicode/utf8"
)

// The canonical form is defined by what encoding/json does: decode the first JSON value with
// UseNumber into map[string]any and []any, drop empty values from objects, encode with
// SetEscapeHTML(false). A revision hash must never change, so that definition is fixed and kept
// as the reference implementation in the tests; canonicaliser produces the same bytes in one pass
// over the text, without building the tree, because the webhook hashes a template per admission.

// maxDepth is encoding/json's nesting limit: a deeper document is an error there, so it is here.
const maxDepth = 10000

var errUnexpectedEnd = errors.New("unexpected end of JSON input")

// canonicaliser reads one JSON value from in and appends its canonical form to out.
type canonicaliser struct {
	in    []byte
	pos   int
	out   []byte
	depth int
	// members holds the members of the objects being read, innermost last: one slice for all
	// levels, so that reading an object allocates nothing once it has grown.
	members []member
	// keys holds the decoded keys that differ from their text (escapes, non-ASCII).
	keys []byte
}

// member is an object member read, waiting for its object's members to be sorted. It holds
// offsets rather than slices: free of pointers, it sorts without write barriers.
type member struct {
	// rawStart and rawEnd delimit the key's text between its quotes in in, written again when
	// the object is; plain as stringBody reports it.
	rawStart, rawEnd int
	// keyStart and keyEnd delimit the decoded key in keys when it is not plain: keys sort by
	// their decoded bytes, as map keys do when encoded.
	keyStart, keyEnd int
	// start and end delimit the member's canonical value in out.
	start, end int
	plain      bool
	empty      bool
}

// key returns the decoded key of m.
func (c *canonicaliser) key(m *member) []byte {
	if m.plain {
		return c.in[m.rawStart:m.rawEnd]
	}
	return c.keys[m.keyStart:m.keyEnd]
}

// canonicalJSON is CanonicalJSON without the error context.
func canonicalJSON(raw []byte) ([]byte, error) {
	// Room for the result and for the largest object's copy while its members are sorted.
	c := canonicaliser{in: raw, out: make([]byte, 0, 2*len(raw))}
	// Like encoding/json's Decoder, read the first value and ignore whatever follows it.
	if _, err := c.value(); err != nil {
		return nil, err
	}
	return c.out, nil
}

func (c *canonicaliser) syntaxError(context string) error {
	if c.pos >= len(c.in) {
		return errUnexpectedEnd
	}
	return fmt.Errorf("invalid character %q %s at offset %d", c.in[c.pos], context, c.pos)
}

func (c *canonicaliser) skipSpace() {
	for c.pos < len(c.in) {
		switch c.in[c.pos] {
		case ' ', '\t', '\r', '\n':
			c.pos++
		default:
			return
		}
	}
}

// next returns the byte at the read position, or 0 at the end of the input (0 is never valid
// where next is used).
func (c *canonicaliser) next() byte {
	if c.pos < len(c.in) {
		return c.in[c.pos]
	}
	return 0
}

// value appends the canonical form of the value at the read position (empty values included: an
// array keeps its empty elements) and reports whether it is empty: null, "", {} once pruned, [].
func (c *canonicaliser) value() (empty bool, err error) {
	c.skipSpace()
	switch b := c.next(); {
	case b == '{':
		return c.object()
	case b == '[':
		return c.array()
	case b == '"':
		return c.string()
	case b == '-' || '0' <= b && b <= '9':
		return false, c.number()
	case b == 't':
		return false, c.literal("true")
	case b == 'f':
		return false, c.literal("false")
	case b == 'n':
		return true, c.literal("null")
	default:
		return false, c.syntaxError("looking for beginning of value")
	}
}

func (c *canonicaliser) enter() error {
	c.depth++
	if c.depth > maxDepth {
		return fmt.Errorf("exceeded max depth at offset %d", c.pos)
	}
	c.pos++
	return nil
}

func (c *canonicaliser) object() (empty bool, err error) {
	if err := c.enter(); err != nil {
		return false, err
	}
	base, mark := len(c.members), len(c.out)
	c.skipSpace()
	if c.next() == '}' {
		c.pos++
	} else {
		for {
			c.skipSpace()
			if c.next() != '"' {
				return false, c.syntaxError("looking for beginning of object key string")
			}
			rawKey, plain, err := c.stringBody()
			if err != nil {
				return false, err
			}
			m := member{rawStart: c.pos - 1 - len(rawKey), rawEnd: c.pos - 1, plain: plain}
			if !plain {
				m.keyStart = len(c.keys)
				c.keys = appendUnquoted(c.keys, rawKey)
				m.keyEnd = len(c.keys)
			}
			c.skipSpace()
			if c.next() != ':' {
				return false, c.syntaxError("after object key")
			}
			c.pos++
			m.start = len(c.out)
			if m.empty, err = c.value(); err != nil {
				return false, err
			}
			if m.empty {
				c.out = c.out[:m.start]
			}
			m.end = len(c.out)
			c.members = append(c.members, m)
			c.skipSpace()
			if c.next() == ',' {
				c.pos++
				continue
			}
			if c.next() != '}' {
				return false, c.syntaxError("after object key:value pair")
			}
			c.pos++
			break
		}
	}
	c.depth--
	members := c.members[base:]
	// Stable, so that of repeated keys the last read is the last of its run.
	slices.SortStableFunc(members, func(a, b member) int { return bytes.Compare(c.key(&a), c.key(&b)) })
	at := len(c.out)
	c.out = append(c.out, '{')
	written := 0
	for i := range members {
		m := &members[i]
		// Of repeated keys the last counts, as when decoding into a map, even when it is empty.
		if m.empty || i+1 < len(members) && bytes.Equal(c.key(&members[i+1]), c.key(m)) {
			continue
		}
		if written > 0 {
			c.out = append(c.out, ',')
		}
		c.out = appendString(c.out, c.in[m.rawStart:m.rawEnd], m.plain)
		c.out = append(c.out, ':')
		c.out = append(c.out, c.out[m.start:m.end]...)
		written++
	}
	c.out = append(c.out, '}')
	// The object replaces its members' values, which it now holds in order.
	c.out = c.out[:mark+copy(c.out[mark:], c.out[at:])]
	c.members = c.members[:base]
	return written == 0, nil
}

func (c *canonicaliser) array() (empty bool, err error) {
	if err := c.enter(); err != nil {
		return false, err
	}
	c.out = append(c.out, '[')
	c.skipSpace()
	if c.next() == ']' {
		c.pos++
		c.depth--
		c.out = append(c.out, ']')
		return true, nil
	}
	for {
		// Elements keep their positions: an empty element is still an element.
		if _, err := c.value(); err != nil {
			return false, err
		}
		c.skipSpace()
		switch c.next() {
		case ',':
			c.pos++
			c.out = append(c.out, ',')
		case ']':
			c.pos++
			c.depth--
			c.out = append(c.out, ']')
			return false, nil
		default:
			return false, c.syntaxError("after array element")
		}
	}
}

func (c *canonicaliser) string() (empty bool, err error) {
	body, plain, err := c.stringBody()
	if err != nil {
		return false, err
	}
	c.out = appendString(c.out, body, plain)
	return len(body) == 0, nil
}

// appendString appends the canonical form of a string body that stringBody read.
func appendString(dst, body []byte, plain bool) []byte {
	if !plain {
		return appendCanonicalString(dst, body)
	}
	// Nothing to resolve or escape: the quoted text is its own canonical form.
	dst = append(dst, '"')
	dst = append(dst, body...)
	return append(dst, '"')
}

// stringBody reads a string and returns its text between the quotes, validated as encoding/json's
// scanner does. plain reports that it is printable ASCII without escapes, so that it decodes and
// encodes to itself.
func (c *canonicaliser) stringBody() (body []byte, plain bool, err error) {
	c.pos++
	start := c.pos
	plain = true
	for c.pos < len(c.in) {
		switch b := c.in[c.pos]; {
		case b == '"':
			c.pos++
			return c.in[start : c.pos-1], plain, nil
		case b == '\\':
			plain = false
			c.pos++
			switch c.next() {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				c.pos++
			case 'u':
				c.pos++
				for range 4 {
					if !isHex(c.next()) {
						return nil, false, c.syntaxError("in \\u hexadecimal character escape")
					}
					c.pos++
				}
			default:
				return nil, false, c.syntaxError("in string escape code")
			}
		case b < ' ':
			return nil, false, c.syntaxError("in string literal")
		default:
			if b >= utf8.RuneSelf {
				plain = false
			}
			c.pos++
		}
	}
	return nil, false, errUnexpectedEnd
}

func isHex(b byte) bool {
	return '0' <= b && b <= '9' || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F'
}

// number copies a number as written (UseNumber keeps it so) after checking its syntax.
func (c *canonicaliser) number() error {
	start := c.pos
	if c.next() == '-' {
		c.pos++
	}
	switch b := c.next(); {
	case b == '0':
		c.pos++
	case '1' <= b && b <= '9':
		c.digits()
	default:
		return c.syntaxError("in numeric literal")
	}
	if c.next() == '.' {
		c.pos++
		if !c.digits() {
			return c.syntaxError("after decimal point in numeric literal")
		}
	}
	if b := c.next(); b == 'e' || b == 'E' {
		c.pos++
		if b := c.next(); b == '+' || b == '-' {
			c.pos++
		}
		if !c.digits() {
			return c.syntaxError("in exponent of numeric literal")
		}
	}
	c.out = append(c.out, c.in[start:c.pos]...)
	return nil
}

// digits skips decimal digits and reports whether there was at least one.
func (c *canonicaliser) digits() bool {
	start := c.pos
	for b := c.next(); '0' <= b && b <= '9'; b = c.next() {
		c.pos++
	}
	return c.pos > start
}

func (c *canonicaliser) literal(word string) error {
	for i := range len(word) {
		if c.next() != word[i] {
			return c.syntaxError("in literal " + word)
		}
		c.pos++
	}
	c.out = append(c.out, word...)
	return nil
}

// nextRune decodes the rune at s[i:] of a validated string body as encoding/json's decoder does:
// escapes resolved, a surrogate pair joined, a lone surrogate or a byte of invalid UTF-8 made
// U+FFFD. It returns the position after it.
func nextRune(s []byte, i int) (rune, int) {
	b := s[i]
	if b >= utf8.RuneSelf {
		r, size := utf8.DecodeRune(s[i:])
		return r, i + size
	}
	if b != '\\' {
		return rune(b), i + 1
	}
	switch s[i+1] {
	case 'b':
		return '\b', i + 2
	case 'f':
		return '\f', i + 2
	case 'n':
		return '\n', i + 2
	case 'r':
		return '\r', i + 2
	case 't':
		return '\t', i + 2
	case 'u':
		r := hex4(s[i+2:])
		if !utf16.IsSurrogate(r) {
			return r, i + 6
		}
		if len(s) >= i+12 && s[i+6] == '\\' && s[i+7] == 'u' {
			if pair := utf16.DecodeRune(r, hex4(s[i+8:])); pair != utf8.RuneError {
				return pair, i + 12
			}
		}
		return utf8.RuneError, i + 6
	default: // " \ /
		return rune(s[i+1]), i + 2
	}
}

// hex4 decodes four validated hexadecimal digits.
func hex4(s []byte) rune {
	var r rune
	for _, b := range s[:4] {
		switch {
		case b <= '9':
			b -= '0'
		case b <= 'F':
			b -= 'A' - 10
		default:
			b -= 'a' - 10
		}
		r = r<<4 | rune(b)
	}
	return r
}

// appendUnquoted appends the decoded text of a validated string body.
func appendUnquoted(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		var r rune
		r, i = nextRune(s, i)
		dst = utf8.AppendRune(dst, r)
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendCanonicalString appends a validated string body decoded and then quoted again as
// encoding/json's encoder does without HTML escaping: only ", \, control characters and U+2028,
// U+2029 are escaped, with the short escapes where JSON has them.
func appendCanonicalString(dst, s []byte) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		var r rune
		r, i = nextRune(s, i)
		switch {
		case r == '"' || r == '\\':
			dst = append(dst, '\\', byte(r))
		case r == '\b':
			dst = append(dst, '\\', 'b')
		case r == '\f':
			dst = append(dst, '\\', 'f')
		case r == '\n':
			dst = append(dst, '\\', 'n')
		case r == '\r':
			dst = append(dst, '\\', 'r')
		case r == '\t':
			dst = append(dst, '\\', 't')
		case r < ' ':
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xF])
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
		default:
			dst = utf8.AppendRune(dst, r)
		}
	}
	return append(dst, '"')
}
