package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"golang.org/x/sync/errgroup"

	"github.com/tfgate/tfgate/placement"
)

// An event line: unix ms seen, add|remove, host, model, version, bytes, since
// (unix s), draining (0/1), copies of the version left on any host after the change.
const eventsHeader = "at_unix_ms\tevent\thost\tmodel\tversion\tbytes\tsince_unix\tdraining\tcopies_after"

type hostKey struct {
	host string
	key  placement.Key
}

func watch(args []string) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	consul := fs.String("consul", "", "Consul HTTP address (required)")
	prefix := fs.String("prefix", "tfgate", "placement KV prefix")
	out := fs.String("out", "", "events file (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *consul == "" || *out == "" {
		return fmt.Errorf("watch: -consul and -out are required")
	}
	cl, err := api.NewClient(&api.Config{Address: *consul})
	if err != nil {
		return err
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, eventsHeader)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	st := placement.NewStore(cl, placement.StoreConfig{Prefix: *prefix, WaitTime: 10 * time.Second})
	updates := make(chan *placement.Stored)
	var g errgroup.Group
	g.Go(func() error { return st.WatchState(ctx, updates) })
	last := map[hostKey]placement.Entry{}
	flushed := time.Now()
	for {
		select {
		case <-ctx.Done():
			if err := g.Wait(); err != nil {
				return err
			}
			return w.Flush()
		case s := <-updates:
			now := time.Now().UnixMilli()
			cur := map[hostKey]placement.Entry{}
			copies := map[placement.Key]int{}
			for h, ha := range s.Assignment.Hosts {
				for _, e := range ha.Entries {
					cur[hostKey{h, e.Key}] = e
					copies[e.Key]++
				}
			}
			// A torn host keeps its last view (as the gateway does).
			for h := range s.Broken {
				for hk, e := range last {
					if hk.host == h {
						cur[hk] = e
						copies[e.Key]++
					}
				}
			}
			line := func(ev string, hk hostKey, e placement.Entry) {
				d := 0
				if e.Draining {
					d = 1
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", now, ev, hk.host, hk.key.Model, hk.key.Version, e.Bytes, e.Since.Unix(), d, copies[hk.key])
			}
			for hk, e := range cur {
				if _, ok := last[hk]; !ok {
					line("add", hk, e)
				}
			}
			for hk, e := range last {
				if _, ok := cur[hk]; !ok {
					line("remove", hk, e)
				}
			}
			last = cur
			if time.Since(flushed) > time.Second {
				if err := w.Flush(); err != nil {
					return err
				}
				flushed = time.Now()
			}
		}
	}
}
