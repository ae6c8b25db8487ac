package servingsim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/tfgate/tfgate/internal/servingsim/model"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

type state = servingpb.ModelVersionStatus_State

const (
	stateStart     = servingpb.ModelVersionStatus_START
	stateLoading   = servingpb.ModelVersionStatus_LOADING
	stateAvailable = servingpb.ModelVersionStatus_AVAILABLE
	stateUnloading = servingpb.ModelVersionStatus_UNLOADING
	stateEnd       = servingpb.ModelVersionStatus_END
)

// version is one version of one model. state and err are guarded by manager.mu;
// the other fields are set before the version becomes AVAILABLE and never change.
type version struct {
	name    string
	num     int64
	state   state
	err     error // the load error, reported in status; nil once unloaded cleanly
	failed  bool  // the last load failed while the version was aspired: do not retry
	model   *model.Model
	exec    *executor
	batcher *batcher // nil without --enable_batching
	// reserved is the memory counted for it (guarded by manager.mu).
	reserved int64
}

// modelEntry is everything known about one model name. Entries are never deleted:
// versions of removed models stay visible as END, as in TF Serving's monitor.
type modelEntry struct {
	cfg      *servingpb.ModelConfig // nil once removed from the config
	versions map[int64]*version
	stop     context.CancelFunc // stops the poller
	done     chan struct{}      // closed when the poller returns
	kick     chan struct{}      // asks the poller to poll now
	// unloaded is closed when a removal's background unload has finished; a
	// re-add waits for it. Set and read under manager.reloadMu.
	unloaded chan struct{}
}

// manager owns model configuration, polling, loading and unloading. Its methods
// are safe for concurrent use.
type manager struct {
	log      *slog.Logger
	cfg      Config
	batching *BatchingParameters
	gpu      chan struct{} // server-wide execution slots; nil: unbounded
	loads    chan struct{} // server-wide load slots (--num_load_threads); nil: unbounded
	stats    stats
	baseCtx  context.Context

	reloadMu sync.Mutex // serializes config changes

	mu      sync.Mutex
	models  map[string]*modelEntry
	labels  map[string]map[string]int64
	memUsed int64         // resident bytes reserved by loading and loaded versions
	changed chan struct{} // closed and replaced on every state change
	wg      sync.WaitGroup
}

func newManager(ctx context.Context, cfg Config, batching *BatchingParameters, log *slog.Logger) *manager {
	m := &manager{log: log, cfg: cfg, batching: batching, baseCtx: ctx,
		models: map[string]*modelEntry{}, labels: map[string]map[string]int64{}, changed: make(chan struct{})}
	if cfg.MaxConcurrentExecutions > 0 {
		m.gpu = make(chan struct{}, cfg.MaxConcurrentExecutions)
	}
	if cfg.NumLoadThreads > 0 {
		m.loads = make(chan struct{}, cfg.NumLoadThreads)
	}
	return m
}

// notifyLocked wakes everyone waiting for a state change. m.mu must be held.
func (m *manager) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// resolve maps a ModelSpec to a servable version, with TF Serving's errors.
func (m *manager) resolve(spec *servingpb.ModelSpec) (*version, error) {
	if spec == nil {
		return nil, tfErr(codes.InvalidArgument, "Missing ModelSpec")
	}
	name := spec.GetName()
	if name == "" {
		return nil, tfErr(codes.InvalidArgument, "ModelSpec has no name specified.")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.models[name]
	switch vc := spec.GetVersionChoice().(type) {
	case *servingpb.ModelSpec_Version:
		n := vc.Version.GetValue()
		if e != nil {
			if v := e.versions[n]; v != nil && v.state == stateAvailable {
				return v, nil
			}
		}
		return nil, tfErr(codes.NotFound, "Servable not found for request: Specific(%s, %d)", name, n)
	case *servingpb.ModelSpec_VersionLabel:
		n, ok := m.labels[name][vc.VersionLabel]
		if !ok {
			return nil, tfErr(codes.InvalidArgument, "Unrecognized servable version label: %s", vc.VersionLabel)
		}
		if e != nil {
			if v := e.versions[n]; v != nil && v.state == stateAvailable {
				return v, nil
			}
		}
		return nil, tfErr(codes.NotFound, "Servable not found for request: Specific(%s, %d)", name, n)
	}
	var best *version
	if e != nil {
		for _, v := range e.versions {
			if v.state == stateAvailable && (best == nil || v.num > best.num) {
				best = v
			}
		}
	}
	if best == nil {
		return nil, tfErr(codes.NotFound, "Servable not found for request: Latest(%s)", name)
	}
	return best, nil
}

// status answers GetModelStatus: labels are ignored, versions newest first.
func (m *manager) status(spec *servingpb.ModelSpec) (*servingpb.GetModelStatusResponse, error) {
	if spec == nil {
		return nil, tfErr(codes.InvalidArgument, "Missing ModelSpec")
	}
	name := spec.GetName()
	m.mu.Lock()
	defer m.mu.Unlock()
	var vs []*version
	if e := m.models[name]; e != nil {
		vs = slices.Collect(maps.Values(e.versions))
	}
	row := func(v *version) *servingpb.ModelVersionStatus {
		return &servingpb.ModelVersionStatus{Version: v.num, State: v.state, Status: statusProto(v.err)}
	}
	resp := &servingpb.GetModelStatusResponse{}
	if spec.GetVersion() != nil {
		n := spec.GetVersion().GetValue()
		for _, v := range vs {
			if v.num == n {
				resp.ModelVersionStatus = append(resp.ModelVersionStatus, row(v))
				return resp, nil
			}
		}
		return nil, tfErr(codes.NotFound, "Could not find version %d of model %s", n, name)
	}
	if len(vs) == 0 {
		return nil, tfErr(codes.NotFound, "Could not find any versions of model %s", name)
	}
	slices.SortFunc(vs, func(a, b *version) int { return compareDesc(a.num, b.num) })
	for _, v := range vs {
		resp.ModelVersionStatus = append(resp.ModelVersionStatus, row(v))
	}
	return resp, nil
}

func compareDesc(a, b int64) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

// singleModelConfig is the config --model_name/--model_base_path stand for.
func singleModelConfig(name, basePath string) *servingpb.ModelServerConfig {
	return &servingpb.ModelServerConfig{Config: &servingpb.ModelServerConfig_ModelConfigList{
		ModelConfigList: &servingpb.ModelConfigList{Config: []*servingpb.ModelConfig{{
			Name: name, BasePath: basePath, ModelPlatform: "tensorflow"}}}}}
}

// reload applies a new ModelServerConfig as TF Serving's ServerCore::ReloadConfig
// does: only model_config_list; validate; labels must name AVAILABLE versions
// (checked against current state, before new models load); add new models, update
// changed ones, remove absent ones; then wait until every newly added model has an
// AVAILABLE version, failing if one of them ends in error. first marks the startup
// config, whose models are polled once synchronously before reload returns.
func (m *manager) reload(ctx context.Context, cfg *servingpb.ModelServerConfig, first bool) error {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	if cfg.GetConfig() == nil {
		m.log.Info("taking no action for empty config")
		return nil
	}
	list := cfg.GetModelConfigList()
	if list == nil {
		return tfErr(codes.FailedPrecondition, "Cannot transition to requested config. It is only legal to transition from one ModelConfigList to another.")
	}
	if err := validateConfigList(list); err != nil {
		return err
	}
	if err := m.updateLabels(list); err != nil {
		return err
	}
	var added []string
	m.mu.Lock()
	wanted := map[string]*servingpb.ModelConfig{}
	for _, mc := range list.GetConfig() {
		wanted[mc.GetName()] = proto.Clone(mc).(*servingpb.ModelConfig)
	}
	var removed []*modelEntry
	for name, e := range m.models {
		if e.cfg != nil && wanted[name] == nil {
			e.cfg = nil
			removed = append(removed, e)
		}
	}
	var toStart, toKick []*modelEntry
	for _, name := range slices.Sorted(maps.Keys(wanted)) {
		mc := wanted[name]
		e := m.models[name]
		if e == nil {
			e = &modelEntry{versions: map[int64]*version{}}
			m.models[name] = e
		}
		if e.cfg == nil {
			added = append(added, name)
			e.cfg = mc
			toStart = append(toStart, e)
			for _, v := range e.versions {
				v.failed = false // a re-added model retries its versions, as a fresh source would
			}
		} else if !proto.Equal(e.cfg, mc) {
			e.cfg = mc
			toKick = append(toKick, e)
		}
	}
	m.mu.Unlock()

	// Removed models unload in the background, as in TF Serving: the reload
	// returns without waiting for them.
	for _, e := range removed {
		stop, done, unloaded := e.stop, e.done, make(chan struct{})
		e.unloaded = unloaded
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer close(unloaded)
			if stop != nil {
				stop()
				<-done
			}
			m.unloadAll(e)
		}()
	}
	for _, e := range toKick {
		select {
		case e.kick <- struct{}{}:
		default:
		}
	}
	for _, e := range toStart {
		if e.unloaded != nil {
			<-e.unloaded // removed earlier: its old versions finish unloading first
			e.unloaded = nil
		}
		m.startPoller(e, first)
	}
	if first {
		return nil
	}
	return m.waitAvailable(ctx, added)
}

// updateLabels validates and installs the config's version labels.
func (m *manager) updateLabels(list *servingpb.ModelConfigList) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := map[string]map[string]int64{}
	for _, mc := range list.GetConfig() {
		name := mc.GetName()
		for _, label := range slices.Sorted(maps.Keys(mc.GetVersionLabels())) {
			n := mc.GetVersionLabels()[label]
			allow := false
			if m.cfg.AllowVersionLabelsForUnavailableModels {
				old, had := m.labels[name][label]
				allow = !had || old == n
			}
			var v *version
			if e := m.models[name]; e != nil {
				v = e.versions[n]
			}
			if !allow && (v == nil || v.state != stateAvailable) {
				return tfErr(codes.FailedPrecondition, "Request to assign label to version %d of model %s, which is not currently available for inference"+LabelHint, n, name)
			}
			if next[name] == nil {
				next[name] = map[string]int64{}
			}
			next[name][label] = n
		}
	}
	m.labels = next
	return nil
}

// availability reports, for the named configured models, the failures of those
// that cannot become available (the newest failed version of each model with no
// AVAILABLE version and nothing loading, as "{{name: N version: V} due to error: E}, ")
// and how many are still waiting for a version.
func (m *manager) availability(names []string) (failed []string, pending int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, name := range names {
		e := m.models[name]
		if e == nil || e.cfg == nil {
			continue
		}
		ok, loading := false, false
		var bad *version
		for _, v := range e.versions {
			switch {
			case v.state == stateAvailable:
				ok = true
			case v.state == stateEnd && v.err != nil && v.failed:
				if bad == nil || v.num > bad.num {
					bad = v
				}
			case v.state != stateEnd:
				loading = true
			}
		}
		switch {
		case ok:
		case bad != nil && !loading:
			c, msg := codeOf(bad.err)
			failed = append(failed, fmt.Sprintf("{{name: %s version: %d} due to error: %s: %s}, ", name, bad.num, tfCodeName(c), msg))
		default:
			pending++
		}
	}
	return failed, pending
}

// waitAvailable waits until each named model has an AVAILABLE version, as
// ServerCore::WaitUntilModelsAvailable does for newly added models.
func (m *manager) waitAvailable(ctx context.Context, names []string) error {
	for {
		m.mu.Lock()
		ch := m.changed
		m.mu.Unlock()
		failed, pending := m.availability(names)
		if len(failed) > 0 {
			return tfErr(codes.Unknown, "%d model(s) did not become available: {%s}", len(failed), strings.Join(failed, ""))
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-m.baseCtx.Done():
			return m.baseCtx.Err()
		}
	}
}

// startupCheck fails like TF Serving's startup when a configured model's versions
// all failed to load. Models with no version on disk are let through (TF Serving
// would wait for one before serving at all).
func (m *manager) startupCheck() error {
	m.mu.Lock()
	names := slices.Sorted(maps.Keys(m.models))
	m.mu.Unlock()
	if failed, _ := m.availability(names); len(failed) > 0 {
		return tfErr(codes.Unknown, "%d servable(s) did not become available: {%s}", len(failed), strings.Join(failed, ""))
	}
	return nil
}

// tfCodeName is TensorFlow's spelling of a code (INVALID_ARGUMENT).
func tfCodeName(c codes.Code) string {
	names := map[codes.Code]string{codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
		codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED", codes.NotFound: "NOT_FOUND",
		codes.AlreadyExists: "ALREADY_EXISTS", codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
		codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED", codes.OutOfRange: "OUT_OF_RANGE",
		codes.Unimplemented: "UNIMPLEMENTED", codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE",
		codes.DataLoss: "DATA_LOSS", codes.Unauthenticated: "UNAUTHENTICATED"}
	if n, ok := names[c]; ok {
		return n
	}
	return c.String()
}

func (m *manager) startPoller(e *modelEntry, pollNow bool) {
	ctx, cancel := context.WithCancel(m.baseCtx)
	e.stop, e.done, e.kick = cancel, make(chan struct{}), make(chan struct{}, 1)
	if pollNow {
		m.pollOnce(ctx, e)
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(e.done)
		m.poll(ctx, e, !pollNow)
	}()
}

func (m *manager) stopPoller(e *modelEntry) {
	if e.stop != nil {
		e.stop()
		<-e.done
	}
}

// poll runs the file-system poll loop of one model until ctx ends.
func (m *manager) poll(ctx context.Context, e *modelEntry, pollFirst bool) {
	wait := m.cfg.FileSystemPollWait
	if wait < 0 {
		<-ctx.Done()
		return
	}
	if pollFirst {
		m.pollOnce(ctx, e)
	}
	for {
		var tick <-chan time.Time
		var t *time.Timer
		if wait > 0 {
			t = time.NewTimer(wait)
			tick = t.C
		}
		select {
		case <-ctx.Done():
			if t != nil {
				t.Stop()
			}
			return
		case <-tick:
		case <-e.kick:
			if t != nil {
				t.Stop()
			}
		}
		m.pollOnce(ctx, e)
	}
}

// aspired lists the versions the policy wants from what is on disk.
func aspired(policy *servingpb.FileSystemStoragePathSourceConfig_ServableVersionPolicy, onDisk []int64) []int64 {
	slices.Sort(onDisk)
	switch {
	case policy.GetAll() != nil:
		return onDisk
	case policy.GetSpecific() != nil:
		var out []int64
		for _, v := range onDisk {
			if slices.Contains(policy.GetSpecific().GetVersions(), v) {
				out = append(out, v)
			}
		}
		return out
	}
	n := max(int(policy.GetLatest().GetNumVersions()), 1)
	if len(onDisk) > n {
		return onDisk[len(onDisk)-n:]
	}
	return onDisk
}

// listVersions returns the numeric children of base; non-numeric names are skipped.
func listVersions(base string) ([]int64, error) {
	ents, err := os.ReadDir(base)
	if err != nil {
		return nil, err
	}
	var out []int64
	for _, de := range ents {
		n, err := strconv.ParseInt(de.Name(), 10, 64)
		if err != nil || n < 0 || de.Name()[0] == '+' {
			continue
		}
		out = append(out, n)
	}
	return out, nil
}

// pollOnce lists the base path, loads newly aspired versions, then unloads versions
// no longer aspired once an aspired one is AVAILABLE (or none is aspired): a new
// version always loads before the old one unloads.
func (m *manager) pollOnce(ctx context.Context, e *modelEntry) {
	m.mu.Lock()
	cfg := e.cfg
	m.mu.Unlock()
	if cfg == nil {
		return
	}
	onDisk, err := listVersions(cfg.GetBasePath())
	if err != nil {
		m.log.Warn("could not poll model base path; keeping current versions", "model", cfg.GetName(), "base_path", cfg.GetBasePath(), "err", err)
		return
	}
	want := aspired(cfg.GetModelVersionPolicy(), onDisk)
	isWanted := map[int64]bool{}
	for _, n := range want {
		isWanted[n] = true
	}
	var toLoad []*version
	m.mu.Lock()
	for _, v := range e.versions {
		if !isWanted[v.num] && v.state == stateEnd {
			v.failed = false // gone from disk or policy: load again if it comes back
		}
	}
	for _, n := range slices.Backward(want) {
		v := e.versions[n]
		if v != nil && (v.state != stateEnd || v.failed) {
			continue
		}
		v = &version{name: cfg.GetName(), num: n, state: stateStart}
		e.versions[n] = v
		toLoad = append(toLoad, v)
	}
	if len(toLoad) > 0 {
		m.notifyLocked()
	}
	m.mu.Unlock()
	for _, v := range toLoad {
		m.load(ctx, cfg, v)
	}

	m.mu.Lock()
	anyAvailable := false
	for _, n := range want {
		if v := e.versions[n]; v != nil && v.state == stateAvailable {
			anyAvailable = true
		}
	}
	var toUnload []*version
	if anyAvailable || len(want) == 0 {
		for _, v := range e.versions {
			if !isWanted[v.num] && v.state == stateAvailable {
				v.state = stateUnloading
				toUnload = append(toUnload, v)
			}
		}
	}
	if len(toUnload) > 0 {
		m.notifyLocked()
	}
	m.mu.Unlock()
	for _, v := range toUnload {
		m.finishUnload(v)
	}
}

// load loads one version, retrying per MaxNumLoadRetries.
func (m *manager) load(ctx context.Context, cfg *servingpb.ModelConfig, v *version) {
	dir := joinVersion(cfg.GetBasePath(), v.num)
	// As TF Serving logs them: approved (queued for a load thread), then loading.
	m.log.Info("approving load for servable version", "model", v.name, "version", v.num)
	if m.loads != nil {
		select {
		case m.loads <- struct{}{}:
			defer func() { <-m.loads }()
		case <-ctx.Done():
			m.mu.Lock()
			v.state, v.err = stateEnd, ctx.Err()
			m.notifyLocked()
			m.mu.Unlock()
			return
		}
	}
	m.setState(v, stateLoading, nil)
	m.log.Info("loading servable version", "model", v.name, "version", v.num)
	var mdl *model.Model
	var err error
	for attempt := 0; ; attempt++ {
		mdl, err = model.Load(dir)
		if err == nil || attempt >= m.cfg.MaxNumLoadRetries {
			break
		}
		m.log.Warn("loading servable failed; will retry", "model", v.name, "version", v.num, "attempt", attempt+1, "err", err)
		t := time.NewTimer(m.cfg.LoadRetryInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			err = errors.Join(err, ctx.Err())
		case <-t.C:
			continue
		}
		break
	}
	if err == nil {
		err = m.admit(ctx, v, mdl.Spec.ResidentBytes)
	}
	if err != nil {
		m.log.Error("loading servable failed", "model", v.name, "version", v.num, "err", err)
		m.mu.Lock()
		v.state, v.err, v.failed = stateEnd, err, true
		m.notifyLocked()
		m.mu.Unlock()
		return
	}
	v.model = mdl
	v.exec = newExecutor(mdl.Spec.Cost, m.cfg, m.gpu, &m.stats)
	if m.batching != nil {
		v.batcher = newBatcher(m.baseCtx, *m.batching, v.exec, mdl)
	}
	m.log.Info("successfully loaded servable version", "model", v.name, "version", v.num)
	m.setState(v, stateAvailable, nil)
}

func (m *manager) setState(v *version, s state, err error) {
	m.mu.Lock()
	v.state, v.err = s, err
	m.notifyLocked()
	m.mu.Unlock()
}

// admit reserves a version's resident bytes against --model_memory_limit_bytes,
// as TF Serving's resource tracker does before a load, then spends the simulated
// load time (--sim_load_bytes_per_second). A refused or cancelled load holds nothing.
func (m *manager) admit(ctx context.Context, v *version, size int64) error {
	if size <= 0 {
		return nil
	}
	m.mu.Lock()
	if limit := m.cfg.ModelMemoryLimitBytes; limit > 0 && m.memUsed+size > limit {
		used := m.memUsed
		m.mu.Unlock()
		return tfErr(codes.ResourceExhausted, "Insufficient resources to load servable {name: %s version: %d}: it needs %d bytes; %d of the %d-byte model memory limit are in use",
			v.name, v.num, size, used, limit)
	}
	m.memUsed += size
	v.reserved = size
	m.mu.Unlock()
	if rate := m.cfg.LoadBytesPerSecond; rate > 0 {
		t := time.NewTimer(time.Duration(float64(size) / float64(rate) * float64(time.Second)))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			m.release(v)
			return fmt.Errorf("load cancelled: %w", ctx.Err())
		}
	}
	return nil
}

// release returns a version's reserved memory.
func (m *manager) release(v *version) {
	m.mu.Lock()
	m.memUsed -= v.reserved
	v.reserved = 0
	m.notifyLocked()
	m.mu.Unlock()
}

// memory reports the resident bytes reserved now and the limit (0: none).
func (m *manager) memory() (used, limit int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.memUsed, m.cfg.ModelMemoryLimitBytes
}

// finishUnload retires a version already marked UNLOADING and frees its memory.
// Requests that resolved it earlier still complete: the model stays valid while
// referenced.
func (m *manager) finishUnload(v *version) {
	if v.batcher != nil {
		v.batcher.close()
	}
	m.log.Info("unloaded servable version", "model", v.name, "version", v.num)
	m.mu.Lock()
	v.state, v.err = stateEnd, nil
	m.memUsed -= v.reserved
	v.reserved = 0
	m.notifyLocked()
	m.mu.Unlock()
}

// unloadAll unloads every version of a removed model.
func (m *manager) unloadAll(e *modelEntry) {
	m.mu.Lock()
	var vs []*version
	for _, v := range e.versions {
		switch v.state {
		case stateAvailable:
			v.state = stateUnloading
			vs = append(vs, v)
		case stateStart, stateLoading:
			v.state = stateEnd
		}
	}
	m.notifyLocked()
	m.mu.Unlock()
	for _, v := range vs {
		m.finishUnload(v)
	}
}

// shutdown stops every poller and batcher.
func (m *manager) shutdown() {
	m.reloadMu.Lock()
	defer m.reloadMu.Unlock()
	m.mu.Lock()
	entries := slices.Collect(maps.Values(m.models))
	m.mu.Unlock()
	for _, e := range entries {
		m.stopPoller(e)
	}
	m.wg.Wait()
	m.mu.Lock()
	var bs []*batcher
	for _, e := range entries {
		for _, v := range e.versions {
			if v.batcher != nil {
				bs = append(bs, v.batcher)
			}
		}
	}
	m.mu.Unlock()
	for _, b := range bs {
		b.close()
	}
}

func joinVersion(base string, n int64) string {
	// TF Serving joins the base path with the child name as listed; a listed
	// "00000123" is found again by re-listing.
	if ents, err := os.ReadDir(base); err == nil {
		for _, de := range ents {
			if v, err := strconv.ParseInt(de.Name(), 10, 64); err == nil && v == n && de.Name()[0] != '+' {
				return base + string(os.PathSeparator) + de.Name()
			}
		}
	}
	return base + string(os.PathSeparator) + strconv.FormatInt(n, 10)
}
