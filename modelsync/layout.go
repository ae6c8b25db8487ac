package modelsync

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/tfgate/tfgate/modelsync/store"
)

// ErrKeyLayout: an object key matches no configured layout, or names an unusable
// model or version.
var ErrKeyLayout = errors.New("object key does not name a model version")

// DefaultLayouts map keys to (model, version): <prefix>/<model>/<version>.tar.gz and
// <prefix>/<model>/<version>/model.tar.gz.
var DefaultLayouts = []string{"{prefix}/{model}/{version}.tar.gz", "{prefix}/{model}/{version}/model.tar.gz"}

// Layout maps object keys to model versions.
type Layout struct {
	prefix   string
	patterns []string
	res      []*regexp.Regexp
}

// NewLayout compiles key patterns. Each holds {model} and {version} once, and may start
// with {prefix}/ (replaced by prefix, or dropped when prefix is empty). {model} matches
// one path component; {version} one component that must be a non-negative integer.
func NewLayout(prefix string, patterns []string) (*Layout, error) {
	prefix = strings.Trim(prefix, "/")
	l := &Layout{prefix: prefix, patterns: patterns}
	var errs []error
	for _, p := range patterns {
		if strings.Count(p, "{model}") != 1 || strings.Count(p, "{version}") != 1 {
			errs = append(errs, fmt.Errorf("layout %q: needs {model} and {version} exactly once", p))
			continue
		}
		expanded := p
		if strings.HasPrefix(p, "{prefix}/") {
			if prefix == "" {
				expanded = strings.TrimPrefix(p, "{prefix}/")
			} else {
				expanded = prefix + "/" + strings.TrimPrefix(p, "{prefix}/")
			}
		} else if strings.Contains(p, "{prefix}") {
			expanded = strings.ReplaceAll(p, "{prefix}", prefix)
		}
		var re strings.Builder
		re.WriteString("^")
		rest := expanded
		for rest != "" {
			i := strings.IndexByte(rest, '{')
			if i < 0 {
				re.WriteString(regexp.QuoteMeta(rest))
				break
			}
			re.WriteString(regexp.QuoteMeta(rest[:i]))
			rest = rest[i:]
			switch {
			case strings.HasPrefix(rest, "{model}"):
				re.WriteString(`(?P<model>[^/]+)`)
				rest = rest[len("{model}"):]
			case strings.HasPrefix(rest, "{version}"):
				re.WriteString(`(?P<version>[^/]+?)`)
				rest = rest[len("{version}"):]
			default:
				re.WriteString(regexp.QuoteMeta("{"))
				rest = rest[1:]
			}
		}
		re.WriteString("$")
		rx, err := regexp.Compile(re.String())
		if err != nil {
			errs = append(errs, fmt.Errorf("layout %q: %w", p, err))
			continue
		}
		l.res = append(l.res, rx)
	}
	if len(patterns) == 0 {
		errs = append(errs, errors.New("no key layouts"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return l, nil
}

// Keys are the object keys the layouts give model's version (written in decimal),
// in layout order.
func (l *Layout) Keys(model string, version int64) []string {
	out := make([]string, 0, len(l.patterns))
	v := strconv.FormatInt(version, 10)
	for _, pat := range l.patterns {
		x := pat
		if strings.HasPrefix(x, "{prefix}/") {
			x = l.Prefix() + strings.TrimPrefix(x, "{prefix}/")
		} else {
			x = strings.ReplaceAll(x, "{prefix}", l.prefix)
		}
		out = append(out, strings.Replace(strings.Replace(x, "{model}", model, 1), "{version}", v, 1))
	}
	return out
}

// Prefix is the listing prefix for catch-up ("" or "prefix/").
func (l *Layout) Prefix() string {
	if l.prefix == "" {
		return ""
	}
	return l.prefix + "/"
}

// Parse maps a (decoded) object key to its model and version.
func (l *Layout) Parse(key string) (model string, version int64, err error) {
	for _, rx := range l.res {
		m := rx.FindStringSubmatch(key)
		if m == nil {
			continue
		}
		model = m[rx.SubexpIndex("model")]
		vs := m[rx.SubexpIndex("version")]
		if err := store.CheckModel(model); err != nil {
			return "", 0, fmt.Errorf("%w: key %q: %v", ErrKeyLayout, key, err)
		}
		v, perr := strconv.ParseInt(vs, 10, 64)
		if perr != nil || v < 0 {
			return "", 0, fmt.Errorf("%w: key %q: version %q is not a non-negative integer", ErrKeyLayout, key, vs)
		}
		if canon := strconv.FormatInt(v, 10); canon != vs {
			// "+7" and "007" would publish as version 7: two objects for one version.
			return "", 0, fmt.Errorf("%w: key %q: version %q is not written canonically (want %q)", ErrKeyLayout, key, vs, canon)
		}
		return model, v, nil
	}
	return "", 0, fmt.Errorf("%w: key %q matches none of %q", ErrKeyLayout, key, l.patterns)
}
