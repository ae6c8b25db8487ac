package gateway

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/tfgate/tfgate/gateway/route"
)

// splitWatch logs a warning, once per change, for each experiment whose split cannot
// be what its weights say (route.ModelRoutes.SplitWarning), and counts the changes
// into that state in n (tfgate.gateway.experiment.split_warnings).
type splitWatch struct {
	mu   sync.Mutex
	last map[string]string // model -> warning
}

func (w *splitWatch) observe(log *slog.Logger, snap *route.Snapshot, n *atomic.Uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := map[string]string{}
	for _, m := range snap.Models() {
		warn := m.SplitWarning()
		if warn == "" {
			continue
		}
		now[m.Name] = warn
		if w.last[m.Name] != warn {
			n.Add(1)
			log.Warn("gateway: experiment split differs from its weights", "model", m.Name, "experiment", m.ExpName, "why", warn)
		}
	}
	for model := range w.last {
		if _, still := now[model]; !still {
			log.Info("gateway: experiment split follows its weights again", "model", model)
		}
	}
	w.last = now
}
