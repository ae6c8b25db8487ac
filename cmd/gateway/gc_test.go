package main

import (
	"math"
	"testing"
)

func TestParseGCFlags(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "2GiB", want: 2 << 30},
		{in: "512MiB", want: 512 << 20},
		{in: "1000", want: 1000},
		{in: "10B", want: 10},
		{in: "off", want: math.MaxInt64},
		{in: "2GB", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "", wantErr: true},
	} {
		got, err := parseBytes(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
			t.Errorf("parseBytes(%q) = %d, %v; want %d (error: %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
	for _, tc := range []struct {
		in      string
		want    int
		wantErr bool
	}{
		{in: "400", want: 400},
		{in: "off", want: -1},
		{in: "0", wantErr: true},
		{in: "x", wantErr: true},
	} {
		got, err := parseGOGC(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
			t.Errorf("parseGOGC(%q) = %d, %v; want %d (error: %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}
