package modelsync

import (
	"github.com/tfgate/tfgate/modelsync/journal"
)

// The per-model scheduler: jobs of one model run one at a time in version order,
// models in parallel up to Config.Concurrency.

type modelQueue struct {
	jobs    []job
	running bool
}

// submit queues a job on its model; the model's goroutine runs its jobs in version order.
func (s *syncer) submit(j job) {
	s.jobs.Add(1)
	s.mu.Lock()
	q := s.models[j.model]
	if q == nil {
		q = &modelQueue{}
		s.models[j.model] = q
	}
	q.jobs = append(q.jobs, j)
	start := !q.running
	q.running = true
	s.mu.Unlock()
	if start {
		go s.runModel(j.model, q)
	}
}

func (s *syncer) runModel(model string, q *modelQueue) {
	for {
		s.mu.Lock()
		if len(q.jobs) == 0 {
			q.running = false
			delete(s.models, model)
			s.mu.Unlock()
			return
		}
		i := 0
		for k := range q.jobs {
			if q.jobs[k].version < q.jobs[i].version {
				i = k
			}
		}
		j := q.jobs[i]
		q.jobs = append(q.jobs[:i], q.jobs[i+1:]...)
		s.mu.Unlock()

		var e journal.Entry
		select {
		case s.workers <- struct{}{}:
			e = s.process(j)
			<-s.workers
		case <-s.workCtx.Done():
			e = s.entry(j)
			e.Outcome, e.Reason = journal.Abandoned, "shutdown before the work started"
		}
		if j.note != "" && e.Reason == "" && (e.Outcome == journal.Published || e.Outcome == journal.Duplicate) {
			e.Reason = j.note
		}
		s.record(e)
		if next, ok := s.fallback(j, e); ok {
			s.submit(next) // takes over j's slot
			s.jobs.Done()
			continue
		}
		s.done(j, e.Outcome)
	}
}

// done accounts for a finished job.
func (s *syncer) done(j job, outcome string) {
	defer s.jobs.Done()
	if j.msg == nil {
		<-s.slots
		return
	}
	m := j.msg
	m.mu.Lock()
	m.pending--
	switch outcome {
	case journal.Failed:
		m.retry = true
	case journal.Abandoned:
		m.retry, m.abandon = true, true
	}
	last := m.pending == 0
	m.mu.Unlock()
	if last {
		s.settle(m)
	}
}
