package testenv

import (
	"fmt"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/tfgate/tfgate/internal/testwait"
)

func TestStartConsul(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []ConsulOption
		// survives says whether a registration outlives Stop/Start.
		survives bool
	}{
		{name: "dev", survives: false},
		{name: "persistent", opts: []ConsulOption{ConsulPersistent()}, survives: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := StartConsul(t, tc.opts...)
			cl := c.Client(t)
			if err := cl.Agent().ServiceRegister(&api.AgentServiceRegistration{
				ID: "svc-1", Name: "svc", Port: 1234, Address: "127.0.0.1",
			}); err != nil {
				t.Fatalf("register: %v", err)
			}
			waitService(t, cl, 1)
			c.Stop(t)
			if _, _, err := cl.Catalog().Service("svc", "", nil); err == nil {
				t.Fatalf("catalog query succeeded with consul stopped")
			}
			c.Start(t)
			want := 0
			if tc.survives {
				want = 1
			}
			waitService(t, cl, want)
		})
	}
}

func waitService(t *testing.T, cl *api.Client, want int) {
	t.Helper()
	testwait.UntilNil(t, fmt.Sprintf("%d instances of service svc", want), func() error {
		svcs, _, err := cl.Catalog().Service("svc", "", &api.QueryOptions{RequireConsistent: true})
		if err != nil {
			return err
		}
		if len(svcs) != want {
			return fmt.Errorf("catalog service svc: %d instances", len(svcs))
		}
		return nil
	})
}
