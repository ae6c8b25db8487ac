package event

import (
	"encoding/json"
	"errors"
	"fmt"
)

// The splitters below find the boundaries of JSON values without decoding them and
// without recursion, so that a value nested deeper than encoding/json accepts fails
// only its own decode (one record), not the whole message. Each value found is still
// decoded, and so fully validated, by encoding/json.

// members splits a JSON object into its members' raw values (the last of duplicate
// names wins, as in encoding/json).
func members(b []byte) (map[string][]byte, error) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, errors.New("not a JSON object")
	}
	out := map[string][]byte{}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return out, trailing(b, i+1)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return nil, fmt.Errorf("offset %d: want a member name", i)
		}
		end, err := skipValue(b, i)
		if err != nil {
			return nil, err
		}
		var name string
		if err := json.Unmarshal(b[i:end], &name); err != nil {
			return nil, fmt.Errorf("offset %d: member name: %v", i, err)
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return nil, fmt.Errorf("offset %d: want ':' after %q", i, name)
		}
		i = skipSpace(b, i+1)
		end, err = skipValue(b, i)
		if err != nil {
			return nil, err
		}
		out[name] = b[i:end]
		i = skipSpace(b, end)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			return out, trailing(b, i+1)
		}
		return nil, fmt.Errorf("offset %d: want ',' or '}'", i)
	}
}

// elements splits a JSON array into at most max raw elements and counts the rest.
func elements(b []byte, max int) (out [][]byte, rest int, err error) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return nil, 0, errors.New("not a JSON array")
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return nil, 0, trailing(b, i+1)
	}
	for {
		end, err := skipValue(b, i)
		if err != nil {
			return nil, 0, err
		}
		if len(out) < max {
			out = append(out, b[i:end])
		} else {
			rest++
		}
		i = skipSpace(b, end)
		if i < len(b) && b[i] == ',' {
			i = skipSpace(b, i+1)
			continue
		}
		if i < len(b) && b[i] == ']' {
			return out, rest, trailing(b, i+1)
		}
		return nil, 0, fmt.Errorf("offset %d: want ',' or ']'", i)
	}
}

func trailing(b []byte, i int) error {
	if i = skipSpace(b, i); i < len(b) {
		return fmt.Errorf("offset %d: data after the value", i)
	}
	return nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the end of the JSON value starting at b[i]. Containers are matched
// with a stack of bracket kinds (a byte slice, not recursion).
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errors.New("unexpected end of JSON")
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
	default:
		j := i
		for j < len(b) && !isDelim(b[j]) {
			j++
		}
		if j == i {
			return 0, fmt.Errorf("offset %d: unexpected %q", i, b[i])
		}
		return j, nil
	}
	var stack []byte
	for j := i; j < len(b); j++ {
		switch c := b[j]; c {
		case '"':
			end, err := skipString(b, j)
			if err != nil {
				return 0, err
			}
			j = end - 1
		case '{', '[':
			stack = append(stack, c)
		case '}', ']':
			open := byte('{')
			if c == ']' {
				open = '['
			}
			if len(stack) == 0 || stack[len(stack)-1] != open {
				return 0, fmt.Errorf("offset %d: unbalanced %q", j, c)
			}
			stack = stack[:len(stack)-1]
			if len(stack) == 0 {
				return j + 1, nil
			}
		}
	}
	return 0, errors.New("unexpected end of JSON")
}

func skipString(b []byte, i int) (int, error) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errors.New("unterminated string")
}

func isDelim(c byte) bool {
	return c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ':'
}

// decodeFields decodes the named members of an object, when present, into their
// destinations.
func decodeFields(top map[string][]byte, dst map[string]any) error {
	for name, p := range dst {
		raw, ok := top[name]
		if !ok {
			continue
		}
		if err := json.Unmarshal(raw, p); err != nil {
			return fmt.Errorf("%s: %v", name, err)
		}
	}
	return nil
}
