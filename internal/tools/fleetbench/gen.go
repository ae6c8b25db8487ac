package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/hashicorp/consul/api"

	"github.com/tfgate/tfgate/internal/modelgen"
	"github.com/tfgate/tfgate/internal/servingsim/model"
	"github.com/tfgate/tfgate/loadtest/fleet"
	"github.com/tfgate/tfgate/modelsync/publish"
	"github.com/tfgate/tfgate/placement"
)

func gen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	out := fs.String("out", "", "output directory (required)")
	n := fs.Int("n", 50000, "models")
	seed := fs.Uint64("seed", 1, "catalog seed")
	median := fs.Float64("median-bytes", 40e6, "median declared resident size")
	sigma := fs.Float64("sigma", 1.3, "sigma of the sizes' underlying normal")
	minB := fs.Int64("min-bytes", 5e6, "smallest declared size")
	maxB := fs.Int64("max-bytes", 1200e6, "largest declared size")
	s3ep := fs.String("s3-endpoint", "", "S3 endpoint (path style; empty: no upload)")
	bucket := fs.String("bucket", "models", "bucket")
	consul := fs.String("consul", "", "Consul HTTP address for the KV catalog (empty: not written)")
	prefix := fs.String("prefix", "tfgate", "placement KV prefix")
	workers := fs.Int("upload-workers", 16, "concurrent S3 uploads")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("gen: -out is required")
	}
	cat, err := fleet.Catalog(fleet.CatalogSpec{N: *n, Prefix: "cust-", MedianBytes: *median, Sigma: *sigma, MinBytes: *minB, MaxBytes: *maxB, Seed: *seed})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(*out, "root"), 0o755); err != nil {
		return err
	}
	// The catalog, one model per line.
	if err := writeLines(filepath.Join(*out, "catalog.tsv"), func(w *bufio.Writer) {
		for _, m := range cat {
			fmt.Fprintf(w, "%s\t%d\n", m.Name, m.Bytes)
		}
	}); err != nil {
		return err
	}
	// The gateway's model root: every model links to one shared version
	// directory (its raw requests need no preprocessing spec; the directory tells
	// the cold-start path that version 1 exists).
	spec := modelgen.Spec{Kind: model.KindLinear, Features: 8, Classes: 2, Seed: 1}
	shared := filepath.Join(*out, "shared")
	if err := modelgen.Export(filepath.Join(shared, "1"), spec); err != nil {
		return err
	}
	for _, m := range cat {
		if err := os.Symlink(shared, filepath.Join(*out, "root", m.Name)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	// The routing config's models: every model with no default, so nothing is
	// required resident: demand alone places them.
	if err := writeLines(filepath.Join(*out, "routing-models.yaml"), func(w *bufio.Writer) {
		fmt.Fprintln(w, "models:")
		for _, m := range cat {
			fmt.Fprintf(w, "  %s: {}\n", m.Name)
		}
	}); err != nil {
		return err
	}
	fmt.Printf("catalog: %d models, %.1f GB declared\n", len(cat), float64(fleet.TotalBytes(cat))/1e9)

	ctx := context.Background()
	if *s3ep != "" {
		t0 := time.Now()
		if err := upload(ctx, *s3ep, *bucket, spec, cat, *workers); err != nil {
			return err
		}
		fmt.Printf("uploaded %d tarballs in %.1fs\n", len(cat), time.Since(t0).Seconds())
	}
	if *consul != "" {
		t0 := time.Now()
		cl, err := api.NewClient(&api.Config{Address: *consul})
		if err != nil {
			return err
		}
		vs := make([]placement.Version, len(cat))
		for i, m := range cat {
			vs[i] = placement.Version{Key: placement.Key{Model: m.Name, Version: 1}, ObjectBytes: m.Bytes}
		}
		st := placement.NewStore(cl, placement.StoreConfig{Prefix: *prefix})
		w, err := st.WriteCatalog(ctx, vs, placement.Written{})
		if err != nil {
			return fmt.Errorf("write the KV catalog: %w", err)
		}
		took := time.Since(t0)
		pairs, _, err := cl.KV().List(st.CatalogPrefix(), nil)
		if err != nil {
			return err
		}
		var kvBytes, largest int
		for _, p := range pairs {
			kvBytes += len(p.Value)
			largest = max(largest, len(p.Value))
		}
		fmt.Printf("KV catalog: %d versions, %d keys, %.0f KB in all (largest value %.0f KB), written in %.2fs\n",
			len(vs), len(pairs), float64(kvBytes)/1e3, float64(largest)/1e3, took.Seconds())
		_ = w
	}
	return nil
}

func writeLines(path string, fn func(*bufio.Writer)) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fn(w)
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// upload puts one tarball per model: spec's files with servingsim.json
// declaring the model's resident bytes, with the sha256 metadata the sidecar
// verifies.
func upload(ctx context.Context, endpoint, bucket string, spec modelgen.Spec, cat []fleet.Model, workers int) error {
	files, err := modelgen.Files(spec)
	if err != nil {
		return err
	}
	var specJSON map[string]any
	if err := json.Unmarshal(files[model.SpecPath], &specJSON); err != nil {
		return err
	}
	cl := s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(endpoint), UsePathStyle: true,
		Credentials:                credentials.NewStaticCredentialsProvider("bench", "bench", ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
	jobs := make(chan fleet.Model)
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	var done atomic.Int64
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			own := maps.Clone(files)
			sj := maps.Clone(specJSON)
			for m := range jobs {
				if firstErr.Load() != nil {
					continue
				}
				sj["resident_bytes"] = m.Bytes
				b, err := json.Marshal(sj)
				if err == nil {
					own[model.SpecPath] = b
					var body []byte
					if body, err = tarGz(own); err == nil {
						sum := sha256.Sum256(body)
						_, err = cl.PutObject(ctx, &s3.PutObjectInput{
							Bucket: aws.String(bucket), Key: aws.String(publish.ObjectKey("", m.Name, 1)),
							Body: bytes.NewReader(body), ContentLength: aws.Int64(int64(len(body))),
							ContentType: aws.String("application/gzip"),
							Metadata:    map[string]string{publish.MetaSHA256: hex.EncodeToString(sum[:])},
						})
					}
				}
				if err != nil {
					e := fmt.Errorf("upload %s: %w", m.Name, err)
					firstErr.CompareAndSwap(nil, &e)
				}
				if d := done.Add(1); d%10000 == 0 {
					fmt.Printf("  %d uploaded\n", d)
				}
			}
		}()
	}
	for _, m := range cat {
		jobs <- m
	}
	close(jobs)
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return *e
	}
	return nil
}

// tarGz is modelgen.ExportTarGz's layout for a files map.
func tarGz(files map[string][]byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := modelgen.WriteTarGz(&buf, files); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
