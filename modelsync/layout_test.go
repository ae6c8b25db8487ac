package modelsync

import (
	"errors"
	"slices"
	"testing"
)

func TestLayoutParse(t *testing.T) {
	tests := []struct {
		name, prefix, key string
		model             string
		version           int64
		wantErr           bool
	}{
		{name: "flat", prefix: "models", key: "models/ctr/17.tar.gz", model: "ctr", version: 17},
		{name: "nested", prefix: "models", key: "models/ctr/17/model.tar.gz", model: "ctr", version: 17},
		// One version, one spelling: "0017" and "+17" would publish over version 17.
		{name: "zero-padded version", prefix: "models", key: "models/ctr/0017/model.tar.gz", wantErr: true},
		{name: "plus-signed version", prefix: "models", key: "models/ctr/+17.tar.gz", wantErr: true},
		{name: "newline in model", key: "a\nb/1.tar.gz", wantErr: true},
		{name: "invalid utf-8 model", key: "a\xffb/1.tar.gz", wantErr: true},
		{name: "no prefix", key: "ctr/3.tar.gz", model: "ctr", version: 3},
		{name: "deep prefix", prefix: "/a/b/", key: "a/b/m x/9.tar.gz", model: "m x", version: 9},
		{name: "wrong prefix", prefix: "models", key: "other/ctr/17.tar.gz", wantErr: true},
		{name: "non-numeric version", prefix: "models", key: "models/ctr/latest.tar.gz", wantErr: true},
		{name: "negative version", key: "ctr/-1.tar.gz", wantErr: true},
		{name: "hidden model", key: ".ctr/1.tar.gz", wantErr: true},
		{name: "dotdot model", key: "../1.tar.gz", wantErr: true},
		{name: "not an archive", key: "ctr/1.zip", wantErr: true},
		{name: "too deep", key: "x/ctr/1.tar.gz", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := NewLayout(tc.prefix, DefaultLayouts)
			if err != nil {
				t.Fatal(err)
			}
			m, v, err := l.Parse(tc.key)
			if tc.wantErr {
				if !errors.Is(err, ErrKeyLayout) {
					t.Errorf("Parse(%q) = %q, %d, %v; want ErrKeyLayout", tc.key, m, v, err)
				}
				return
			}
			if err != nil || m != tc.model || v != tc.version {
				t.Errorf("Parse(%q) = %q, %d, %v; want %q, %d", tc.key, m, v, err, tc.model, tc.version)
			}
		})
	}
}

func TestNewLayoutErrors(t *testing.T) {
	for _, p := range [][]string{{"{model}.tar.gz"}, {"{model}/{version}/{version}"}, {}} {
		if _, err := NewLayout("", p); err == nil {
			t.Errorf("NewLayout(%q) succeeded, want error", p)
		}
	}
}

func FuzzLayoutParse(f *testing.F) {
	for _, k := range []string{"models/ctr/17.tar.gz", "models/a/1/model.tar.gz", "models/../1.tar.gz", "models/x/99999999999999999999.tar.gz"} {
		f.Add(k)
	}
	l, err := NewLayout("models", DefaultLayouts)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, key string) {
		m, v, err := l.Parse(key)
		if err != nil {
			if !errors.Is(err, ErrKeyLayout) {
				t.Fatalf("Parse(%q) error %v is not ErrKeyLayout", key, err)
			}
			return
		}
		if v < 0 || m == "" || m[0] == '.' {
			t.Fatalf("Parse(%q) = %q, %d: unusable", key, m, v)
		}
	})
}

func TestLayoutKeys(t *testing.T) {
	l, err := NewLayout("models", DefaultLayouts)
	if err != nil {
		t.Fatal(err)
	}
	got := l.Keys("cust-7", 12)
	want := []string{"models/cust-7/12.tar.gz", "models/cust-7/12/model.tar.gz"}
	if !slices.Equal(got, want) {
		t.Fatalf("Keys = %q, want %q", got, want)
	}
	for _, k := range got {
		if m, v, err := l.Parse(k); err != nil || m != "cust-7" || v != 12 {
			t.Errorf("Parse(%q) = %q, %d, %v: a key from Keys must parse back", k, m, v, err)
		}
	}
	bare, err := NewLayout("", []string{"{prefix}/{model}/v{version}.tgz"})
	if err != nil {
		t.Fatal(err)
	}
	if got := bare.Keys("m", 3); !slices.Equal(got, []string{"m/v3.tgz"}) {
		t.Fatalf("Keys without prefix = %q", got)
	}
}
