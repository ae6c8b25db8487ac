package kubernetes

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/tfgate/tfgate/gateway/route"
)

// The subset of the Kubernetes API the checks read. Unknown fields are
// ignored here on purpose: kubectl validates the full schema.
type object struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   metadata `yaml:"metadata"`
	Spec       spec     `yaml:"spec"`
	Data       map[string]string
	Resources  []string `yaml:"resources"`
	file       string
}

type metadata struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type spec struct {
	// Deployment / StatefulSet
	Replicas    *int        `yaml:"replicas"`
	ServiceName string      `yaml:"serviceName"`
	Selector    selector    `yaml:"selector"`
	Template    podTemplate `yaml:"template"`
	// Service
	ClusterIP string        `yaml:"clusterIP"`
	Ports     []servicePort `yaml:"ports"`
}

// selector is a Deployment's {matchLabels} or a Service's plain map.
type selector struct {
	MatchLabels map[string]string
	Plain       map[string]string
}

func (s *selector) UnmarshalYAML(n *yaml.Node) error {
	var m map[string]any
	if err := n.Decode(&m); err != nil {
		return err
	}
	if ml, ok := m["matchLabels"]; ok {
		b, _ := yaml.Marshal(ml)
		return yaml.Unmarshal(b, &s.MatchLabels)
	}
	return n.Decode(&s.Plain)
}

type servicePort struct {
	Name       string `yaml:"name"`
	Port       int    `yaml:"port"`
	TargetPort string `yaml:"targetPort"`
}

type podTemplate struct {
	Metadata metadata `yaml:"metadata"`
	Spec     podSpec  `yaml:"spec"`
}

type podSpec struct {
	InitContainers []container `yaml:"initContainers"`
	Containers     []container `yaml:"containers"`
	Volumes        []volume    `yaml:"volumes"`
}

type volume struct {
	Name      string         `yaml:"name"`
	EmptyDir  map[string]any `yaml:"emptyDir"`
	ConfigMap *struct {
		Name string `yaml:"name"`
	} `yaml:"configMap"`
	Secret *struct {
		SecretName string `yaml:"secretName"`
	} `yaml:"secret"`
}

type container struct {
	Name           string        `yaml:"name"`
	Image          string        `yaml:"image"`
	Command        []string      `yaml:"command"`
	Args           []string      `yaml:"args"`
	Ports          []port        `yaml:"ports"`
	VolumeMounts   []volumeMount `yaml:"volumeMounts"`
	Env            []envVar      `yaml:"env"`
	ReadinessProbe *probe        `yaml:"readinessProbe"`
	LivenessProbe  *probe        `yaml:"livenessProbe"`
	StartupProbe   *probe        `yaml:"startupProbe"`
	Resources      struct {
		Limits map[string]string `yaml:"limits"`
	} `yaml:"resources"`
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom struct {
		FieldRef struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
	} `yaml:"valueFrom"`
}

// adminPort is the port of a container's --admin-listen, checking its host: empty (all
// interfaces) or $(POD_IP) from the downward API, since the gateway's own default is
// loopback, which probes and scrapers cannot reach.
func adminPort(t *testing.T, c *container) string {
	t.Helper()
	admin := flag(c.Args, "admin-listen")
	host, port, ok := strings.Cut(admin, ":")
	if !ok {
		return ""
	}
	if host == "$(POD_IP)" {
		found := false
		for _, e := range c.Env {
			found = found || (e.Name == "POD_IP" && e.ValueFrom.FieldRef.FieldPath == "status.podIP")
		}
		if !found {
			t.Errorf("%s: --admin-listen=%s but no POD_IP env from status.podIP", c.Name, admin)
		}
	} else if host != "" {
		t.Errorf("%s: --admin-listen=%s: want the pod address ($(POD_IP)) or all interfaces", c.Name, admin)
	}
	return port
}

type port struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
}

type volumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	SubPath   string `yaml:"subPath"`
	ReadOnly  bool   `yaml:"readOnly"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
	TCPSocket *struct {
		Port string `yaml:"port"`
	} `yaml:"tcpSocket"`
	GRPC *struct {
		Port int `yaml:"port"`
	} `yaml:"grpc"`
}

func loadAll(t *testing.T) (files []string, objs []*object) {
	t.Helper()
	paths, err := filepath.Glob("*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	for _, p := range paths {
		files = append(files, p)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for i := 0; ; i++ {
			var o object
			if err := dec.Decode(&o); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s document %d: %v", p, i+1, err)
			}
			if o.Kind == "" {
				continue
			}
			o.file = p
			objs = append(objs, &o)
		}
	}
	return files, objs
}

func find(objs []*object, kind, name string) *object {
	for _, o := range objs {
		if o.Kind == kind && o.Metadata.Name == name {
			return o
		}
	}
	return nil
}

func containerNamed(p podSpec, name string) *container {
	for i := range p.Containers {
		if p.Containers[i].Name == name {
			return &p.Containers[i]
		}
	}
	return nil
}

// flag returns the value of --name=value in args, or "".
func flag(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return ""
}

func hasFlag(args []string, name string) bool {
	return slices.Contains(args, "--"+name) || flag(args, name) != ""
}

func portNumber(t *testing.T, c *container, ref string) int {
	t.Helper()
	if n, err := strconv.Atoi(ref); err == nil {
		return n
	}
	for _, p := range c.Ports {
		if p.Name == ref {
			return p.ContainerPort
		}
	}
	t.Errorf("container %s: port %q is not one of its named ports", c.Name, ref)
	return -1
}

func mountOf(c *container, volume string) *volumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == volume {
			return &c.VolumeMounts[i]
		}
	}
	return nil
}

// mountFor returns the mount whose path holds file.
func mountFor(c *container, file string) *volumeMount {
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		if strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") {
			return m
		}
	}
	return nil
}

var pinned = regexp.MustCompile(`^[a-z0-9./-]+:[0-9]+\.[0-9]+\.[0-9]+[A-Za-z0-9.-]*(@sha256:[a-f0-9]{64})?$`)

func TestManifestsParseAndAreComplete(t *testing.T) {
	files, objs := loadAll(t)
	kust := find(objs, "Kustomization", "")
	if kust == nil {
		t.Fatal("kustomization.yaml missing")
	}
	var want []string
	for _, f := range files {
		if f != "kustomization.yaml" {
			want = append(want, f)
		}
	}
	got := slices.Clone(kust.Resources)
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("kustomization resources %v, want every manifest %v", got, want)
	}
	seen := map[string]string{}
	for _, o := range objs {
		if o.Kind == "Kustomization" {
			continue
		}
		if o.APIVersion == "" || o.Metadata.Name == "" {
			t.Errorf("%s: %s without apiVersion or name", o.file, o.Kind)
		}
		if o.Kind != "Namespace" && o.Metadata.Namespace != "tfgate" {
			t.Errorf("%s: %s/%s namespace %q, want tfgate", o.file, o.Kind, o.Metadata.Name, o.Metadata.Namespace)
		}
		key := o.Kind + "/" + o.Metadata.Name
		if prev, dup := seen[key]; dup {
			t.Errorf("%s defined in %s and %s", key, prev, o.file)
		}
		seen[key] = o.file
	}
}

func workloads(objs []*object) []*object {
	var out []*object
	for _, o := range objs {
		if o.Kind == "Deployment" || o.Kind == "StatefulSet" {
			out = append(out, o)
		}
	}
	return out
}

func TestImagesPinnedAndProbesReal(t *testing.T) {
	_, objs := loadAll(t)
	ws := workloads(objs)
	if len(ws) != 3 {
		t.Fatalf("got %d workloads, want gateway, tfserving-gpu and tfserving-cpu", len(ws))
	}
	for _, w := range ws {
		pod := w.Spec.Template.Spec
		for _, c := range append(slices.Clone(pod.InitContainers), pod.Containers...) {
			if !pinned.MatchString(c.Image) {
				t.Errorf("%s/%s: image %q is not pinned to a release tag", w.Metadata.Name, c.Name, c.Image)
			}
		}
		for i := range pod.Containers {
			c := &pod.Containers[i]
			if c.ReadinessProbe == nil || c.LivenessProbe == nil {
				t.Errorf("%s/%s: needs readiness and liveness probes", w.Metadata.Name, c.Name)
				continue
			}
			ours := strings.HasPrefix(c.Image, "ghcr.io/tfgate/")
			for kind, p := range map[string]*probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
				if p == nil {
					continue
				}
				switch {
				case p.HTTPGet != nil:
					n := portNumber(t, c, p.HTTPGet.Port)
					if ours {
						admin := adminPort(t, c)
						want := map[string]string{"readiness": "/readyz", "liveness": "/healthz"}[kind]
						if p.HTTPGet.Path != want {
							t.Errorf("%s/%s %s probe path %q, want %s (served by internal/telemetry's admin server)", w.Metadata.Name, c.Name, kind, p.HTTPGet.Path, want)
						}
						if admin != strconv.Itoa(n) {
							t.Errorf("%s/%s %s probe on port %d but --admin-listen=%q", w.Metadata.Name, c.Name, kind, n, admin)
						}
					} else if strings.HasPrefix(c.Image, "tensorflow/serving:") {
						if !strings.HasPrefix(p.HTTPGet.Path, "/v1/models/") || strconv.Itoa(n) != flag(c.Args, "rest_api_port") {
							t.Errorf("%s/%s %s probe %s:%d, want TF Serving's REST model status on --rest_api_port", w.Metadata.Name, c.Name, kind, p.HTTPGet.Path, n)
						}
					}
				case p.TCPSocket != nil:
					portNumber(t, c, p.TCPSocket.Port)
				case p.GRPC != nil:
				default:
					t.Errorf("%s/%s %s probe has no handler", w.Metadata.Name, c.Name, kind)
				}
			}
			if ann := w.Spec.Template.Metadata.Annotations["prometheus.io/port"]; ann != "" {
				found := false
				for _, c := range pod.Containers {
					if adminPort(t, &c) == ann {
						found = true
					}
				}
				if !found {
					t.Errorf("%s: prometheus.io/port %s is no container's --admin-listen", w.Metadata.Name, ann)
				}
			}
		}
	}
}

func TestTFServingSharesModelVolumeWithModelsync(t *testing.T) {
	_, objs := loadAll(t)
	modelsCfg := find(objs, "ConfigMap", "tfserving-models")
	if modelsCfg == nil {
		t.Fatal("ConfigMap tfserving-models missing")
	}
	for _, tc := range []struct{ name, tag, gpu string }{
		{name: "tfserving-gpu", tag: "-gpu", gpu: "1"},
		{name: "tfserving-cpu", tag: "", gpu: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := find(objs, "StatefulSet", tc.name)
			if w == nil {
				t.Fatalf("StatefulSet %s missing", tc.name)
			}
			pod := w.Spec.Template.Spec
			tfs, ms := containerNamed(pod, "tfserving"), containerNamed(pod, "modelsync")
			if tfs == nil || ms == nil {
				t.Fatalf("want containers tfserving and modelsync")
			}
			repo, tag, _ := strings.Cut(tfs.Image, ":")
			if repo != "tensorflow/serving" || strings.HasSuffix(tag, "-gpu") != (tc.tag == "-gpu") {
				t.Errorf("image %q, want the real tensorflow/serving image, %s variant", tfs.Image, map[bool]string{true: "GPU", false: "CPU"}[tc.gpu != ""])
			}
			if got := tfs.Resources.Limits["nvidia.com/gpu"]; got != tc.gpu {
				t.Errorf("nvidia.com/gpu limit %q, want %q", got, tc.gpu)
			}
			// One emptyDir, mounted at the same path in both containers.
			base := flag(ms.Args, "base-path")
			msMount := mountFor(ms, base+"/x")
			if base == "" || msMount == nil || msMount.MountPath != base {
				t.Fatalf("modelsync --base-path=%q is not a volume mount of its own", base)
			}
			tfsMount := mountOf(tfs, msMount.Name)
			if tfsMount == nil || tfsMount.MountPath != msMount.MountPath || tfsMount.SubPath != "" || msMount.SubPath != "" || msMount.ReadOnly {
				t.Errorf("volume %q: modelsync mounts it at %q, tfserving at %+v; want the same path, no subPath, writable for modelsync", msMount.Name, msMount.MountPath, tfsMount)
			}
			var vol *volume
			for i := range pod.Volumes {
				if pod.Volumes[i].Name == msMount.Name {
					vol = &pod.Volumes[i]
				}
			}
			if vol == nil || vol.EmptyDir == nil {
				t.Errorf("volume %q must be an emptyDir shared by the pod's containers", msMount.Name)
			}
			// TF Serving reads its model config from the shared volume, and every
			// model's base_path lies under it.
			cfgFile := flag(tfs.Args, "model_config_file")
			if !strings.HasPrefix(cfgFile, base+"/") || flag(ms.Args, "model-config-file") != cfgFile {
				t.Errorf("--model_config_file=%q, modelsync --model-config-file=%q: want the same file under %s", cfgFile, flag(ms.Args, "model-config-file"), base)
			}
			bases := regexp.MustCompile(`base_path:\s*"([^"]+)"`).FindAllStringSubmatch(modelsCfg.Data["models.config"], -1)
			if len(bases) == 0 {
				t.Errorf("models.config names no base_path")
			}
			for _, b := range bases {
				if filepath.Dir(b[1]) != base {
					t.Errorf("models.config base_path %q is not <%s>/<model>", b[1], base)
				}
			}
			// modelsync reaches TF Serving's gRPC port on localhost.
			_, p, err := net.SplitHostPort(flag(ms.Args, "tfserving-addr"))
			if err != nil || p != flag(tfs.Args, "port") || strconv.Itoa(portNumber(t, tfs, "grpc")) != p {
				t.Errorf("modelsync --tfserving-addr port %q, TF Serving --port %q, containerPort grpc %d: want all equal", p, flag(tfs.Args, "port"), portNumber(t, tfs, "grpc"))
			}
			if flag(ms.Args, "mode") != "serving" {
				t.Errorf("modelsync --mode=%q, want serving", flag(ms.Args, "mode"))
			}
		})
	}
}

func TestGatewayMountsAndRoutingConfig(t *testing.T) {
	_, objs := loadAll(t)
	w := find(objs, "Deployment", "gateway")
	if w == nil {
		t.Fatal("Deployment gateway missing")
	}
	pod := w.Spec.Template.Spec
	gw, ms := containerNamed(pod, "gateway"), containerNamed(pod, "modelsync")
	if gw == nil || ms == nil {
		t.Fatal("want containers gateway and modelsync")
	}
	// Preprocessing specs: the gateway-mode sidecar writes where the gateway reads.
	root := flag(gw.Args, "model-root")
	if flag(ms.Args, "mode") != "gateway" || flag(ms.Args, "base-path") != root {
		t.Errorf("modelsync --mode=%q --base-path=%q, want gateway mode writing the gateway's --model-root %q", flag(ms.Args, "mode"), flag(ms.Args, "base-path"), root)
	}
	gm, mm := mountFor(gw, root+"/x"), mountFor(ms, root+"/x")
	if gm == nil || mm == nil || gm.Name != mm.Name || gm.MountPath != root || mm.MountPath != root {
		t.Errorf("model root %q: gateway mount %+v, modelsync mount %+v; want one volume at the same path", root, gm, mm)
	}
	// Files that must reload in place are mounted as directories (a subPath
	// mount never sees ConfigMap or Secret updates).
	for _, f := range []string{"config", "tls-cert", "tls-key", "tls-client-ca"} {
		path := flag(gw.Args, f)
		m := mountFor(gw, path)
		if path == "" || m == nil || m.SubPath != "" {
			t.Errorf("--%s=%q: want it inside a directory mount without subPath, got %+v", f, path, m)
		}
	}
	if !hasFlag(gw.Args, "backend-insecure") && !hasFlag(gw.Args, "backend-tls-ca") {
		t.Errorf("gateway args choose no backend transport (--backend-insecure or --backend-tls-ca)")
	}
	// The mounted routing config is valid for the gateway's own parser, and its
	// static pools name real TF Serving pods on their gRPC port.
	cm := find(objs, "ConfigMap", "gateway-routes")
	if cm == nil {
		t.Fatal("ConfigMap gateway-routes missing")
	}
	key := filepath.Base(flag(gw.Args, "config"))
	data, ok := cm.Data[key]
	if !ok {
		t.Fatalf("ConfigMap gateway-routes has no key %q (the file --config names)", key)
	}
	cfg, err := route.Parse("gateway-routes/"+key, []byte(data), nil)
	if err != nil {
		t.Fatalf("routing config: %v", err)
	}
	podDNS := regexp.MustCompile(`^([a-z0-9-]+)-([0-9]+)\.([a-z0-9-]+)\.tfgate\.svc\.cluster\.local:([0-9]+)$`)
	for name, pool := range cfg.Hosts.Pools {
		for _, addr := range pool.Static {
			m := podDNS.FindStringSubmatch(addr)
			if m == nil {
				t.Errorf("pool %s: %q is not <statefulset>-<n>.<service>.tfgate.svc.cluster.local:<port>", name, addr)
				continue
			}
			ss := find(objs, "StatefulSet", m[1])
			idx, _ := strconv.Atoi(m[2])
			if ss == nil || ss.Spec.ServiceName != m[3] || ss.Spec.Replicas == nil || idx >= *ss.Spec.Replicas {
				t.Errorf("pool %s: %q names no pod of a StatefulSet with that headless service", name, addr)
				continue
			}
			if tfs := containerNamed(ss.Spec.Template.Spec, "tfserving"); tfs == nil || flag(tfs.Args, "port") != m[4] {
				t.Errorf("pool %s: %q port is not TF Serving's --port", name, addr)
			}
		}
	}
}

func TestServicesSelectPodsAndPorts(t *testing.T) {
	_, objs := loadAll(t)
	for _, svc := range objs {
		if svc.Kind != "Service" {
			continue
		}
		t.Run(svc.Metadata.Name, func(t *testing.T) {
			var matched *object
			for _, w := range workloads(objs) {
				ok := len(svc.Spec.Selector.Plain) > 0
				for k, v := range svc.Spec.Selector.Plain {
					if w.Spec.Template.Metadata.Labels[k] != v {
						ok = false
					}
				}
				if ok {
					if matched != nil {
						t.Errorf("selects both %s and %s", matched.Metadata.Name, w.Metadata.Name)
					}
					matched = w
				}
			}
			if matched == nil {
				t.Fatalf("selector %v matches no workload's pods", svc.Spec.Selector.Plain)
			}
			for k, v := range matched.Spec.Selector.MatchLabels {
				if matched.Spec.Template.Metadata.Labels[k] != v {
					t.Errorf("%s: selector %s=%s does not match its own pod labels", matched.Metadata.Name, k, v)
				}
			}
			if matched.Kind == "StatefulSet" && (matched.Spec.ServiceName != svc.Metadata.Name || svc.Spec.ClusterIP != "None") {
				t.Errorf("StatefulSet %s: serviceName %q; its Service must be headless (clusterIP: None)", matched.Metadata.Name, matched.Spec.ServiceName)
			}
			for _, sp := range svc.Spec.Ports {
				found := false
				for _, c := range matched.Spec.Template.Spec.Containers {
					for _, p := range c.Ports {
						if p.Name == sp.TargetPort && p.ContainerPort == sp.Port {
							found = true
						}
					}
				}
				if !found {
					t.Errorf("port %s (%d -> %s) matches no container port of the same number", sp.Name, sp.Port, sp.TargetPort)
				}
			}
		})
	}
}
