// controlplane starts a real Kubernetes control plane on loopback for tests: etcd (embedded,
// in this process), kube-apiserver, kube-controller-manager (every default controller) and
// kube-scheduler, from binaries built from the same Kubernetes release (see build.sh). It
// writes a certificate authority, every certificate the parts need, and an admin kubeconfig
// into -dir, prints "ready" once the API server answers /readyz and the controllers and
// scheduler are healthy, and stops everything on SIGTERM or SIGINT — or when any part exits,
// so a broken control plane fails the tests that use it instead of hanging them.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	log.SetFlags(log.Ltime)
	log.SetPrefix("controlplane: ")
	binDir := flag.String("bin-dir", "", "directory holding kube-apiserver, kube-controller-manager and kube-scheduler")
	dir := flag.String("dir", "", "working directory: data, certificates, kubeconfigs and logs")
	hpaSync := flag.Duration("hpa-sync-period", 15*time.Second, "how often the HPA controller reconciles")
	nodes := flag.String("node-certs", "", "comma-separated node names to issue kubelet client certificates for")
	kubeletAddresses := flag.String("kubelet-address-types", "Hostname,InternalDNS,InternalIP,ExternalDNS,ExternalIP",
		"the node address types the API server reaches kubelets at (logs, exec), in order; InternalIP for a real kubelet whose node name does not resolve")
	flag.Parse()
	if *binDir == "" || *dir == "" {
		log.Fatal("usage: controlplane -bin-dir DIR -dir DIR")
	}
	if err := run(*binDir, *dir, *hpaSync, *nodes, *kubeletAddresses); err != nil {
		log.Fatal(err)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type part struct {
	name string
	cmd  *exec.Cmd
	done chan error
}

func start(binDir, dir, name string, args ...string) (*part, error) {
	logFile, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// The parts die with this process, even when it is killed without a chance to stop them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &part{name: name, cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); logFile.Close() }()
	return p, nil
}

func (p *part) stop() {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// healthy polls an HTTPS health endpoint until it answers 200.
func healthy(ctx context.Context, client *http.Client, url string, p *part) error {
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("%s exited before it was healthy (%v); see %s.log", p.name, err, p.name)
		case <-ctx.Done():
			return fmt.Errorf("%s was not healthy at %s within the start-up deadline; see %s.log", p.name, url, p.name)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func run(binDir, dir string, hpaSync time.Duration, nodeCerts, kubeletAddresses string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	pki := filepath.Join(dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	ports := map[string]int{}
	for _, name := range []string{"etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler"} {
		if ports[name], err = freePort(); err != nil {
			return err
		}
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", ports["apiserver"])

	ca, err := newAuthority()
	if err != nil {
		return err
	}
	caFile := filepath.Join(pki, "ca.crt")
	if err := os.WriteFile(caFile, ca.pem, 0o600); err != nil {
		return err
	}
	caKey, err := keyPEM(ca.key)
	if err != nil {
		return err
	}
	caKeyFile := filepath.Join(pki, "ca.key")
	if err := os.WriteFile(caKeyFile, caKey, 0o600); err != nil {
		return err
	}
	saPrivate, saPublic, err := serviceAccountKeys(pki)
	if err != nil {
		return err
	}
	serving, err := ca.issue("kube-apiserver", nil, []string{
		"127.0.0.1", "10.96.0.1", "localhost", "kubernetes", "kubernetes.default",
		"kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
	})
	if err != nil {
		return err
	}
	servingCrt, servingKey, err := serving.write(pki, "apiserver")
	if err != nil {
		return err
	}
	// Webhooks the tests register (the load-balancer stand-in's) serve with this pair.
	webhook, err := ca.issue("webhook", nil, []string{"127.0.0.1", "localhost"})
	if err != nil {
		return err
	}
	if _, _, err := webhook.write(pki, "webhook"); err != nil {
		return err
	}
	proxy, err := ca.issue("front-proxy-client", nil, nil)
	if err != nil {
		return err
	}
	proxyCrt, proxyKey, err := proxy.write(pki, "front-proxy-client")
	if err != nil {
		return err
	}
	// Every part is a cluster administrator: what is tested is infra-gen, not RBAC defaults.
	kubeconfigs := map[string]string{}
	for _, user := range []string{"admin", "controller-manager", "scheduler"} {
		client, err := ca.issue(user, []string{"system:masters"}, nil)
		if err != nil {
			return err
		}
		path := filepath.Join(dir, user+".kubeconfig")
		if err := os.WriteFile(path, kubeconfig(server, ca.pem, client, user), 0o600); err != nil {
			return err
		}
		kubeconfigs[user] = path
	}
	for _, node := range splitList(nodeCerts) {
		client, err := ca.issue("system:node:"+node, []string{"system:nodes"}, nil)
		if err != nil {
			return err
		}
		if _, _, err := client.write(pki, "node-"+node); err != nil {
			return err
		}
		path := filepath.Join(dir, "node-"+node+".kubeconfig")
		if err := os.WriteFile(path, kubeconfig(server, ca.pem, client, "system:node:"+node), 0o600); err != nil {
			return err
		}
	}

	etcd, err := startEtcd(filepath.Join(dir, "etcd"), ports["etcd"], ports["etcd-peer"])
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()

	var parts []*part
	defer func() {
		for i := len(parts) - 1; i >= 0; i-- {
			parts[i].stop()
		}
	}()
	apiserver, err := start(binDir, dir, "kube-apiserver",
		"--etcd-servers="+fmt.Sprintf("http://127.0.0.1:%d", ports["etcd"]),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(ports["apiserver"]),
		"--cert-dir="+pki,
		"--tls-cert-file="+servingCrt,
		"--tls-private-key-file="+servingKey,
		"--client-ca-file="+caFile,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+saPublic,
		"--service-account-signing-key-file="+saPrivate,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		// The API server refuses 127.0.0.1 as an endpoint of the kubernetes Service.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--profiling=false",
		"--requestheader-client-ca-file="+caFile,
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file="+proxyCrt,
		"--proxy-client-key-file="+proxyKey,
		"--kubelet-client-certificate="+proxyCrt,
		"--kubelet-client-key="+proxyKey,
		"--kubelet-preferred-address-types="+kubeletAddresses,
	)
	if err != nil {
		return err
	}
	parts = append(parts, apiserver)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.pem)
	verified := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	// The controller manager and scheduler serve their health checks with self-signed
	// certificates of their own.
	insecure := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := healthy(ctx, verified, server+"/readyz", apiserver); err != nil {
		return err
	}
	common := func(user string, port int) []string {
		return []string{
			"--kubeconfig=" + kubeconfigs[user],
			"--authentication-kubeconfig=" + kubeconfigs[user],
			"--authorization-kubeconfig=" + kubeconfigs[user],
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			"--leader-elect=false",
		}
	}
	kcm, err := start(binDir, dir, "kube-controller-manager", append(common("controller-manager", ports["controller-manager"]),
		"--controllers=*",
		"--service-account-private-key-file="+saPrivate,
		"--root-ca-file="+caFile,
		"--cluster-signing-cert-file="+caFile,
		"--cluster-signing-key-file="+caKeyFile,
		"--horizontal-pod-autoscaler-sync-period="+hpaSync.String(),
	)...)
	if err != nil {
		return err
	}
	parts = append(parts, kcm)
	scheduler, err := start(binDir, dir, "kube-scheduler", common("scheduler", ports["scheduler"])...)
	if err != nil {
		return err
	}
	parts = append(parts, scheduler)
	if err := healthy(ctx, insecure, fmt.Sprintf("https://127.0.0.1:%d/healthz", ports["controller-manager"]), kcm); err != nil {
		return err
	}
	if err := healthy(ctx, insecure, fmt.Sprintf("https://127.0.0.1:%d/healthz", ports["scheduler"]), scheduler); err != nil {
		return err
	}
	fmt.Printf("ready: KUBECONFIG=%s\n", kubeconfigs["admin"])

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	cases := make(chan error, len(parts)+1)
	for _, p := range parts {
		go func(p *part) {
			err := <-p.done
			p.done <- err
			cases <- fmt.Errorf("%s exited (%v); see %s/%s.log", p.name, err, dir, p.name)
		}(p)
	}
	go func() { cases <- <-etcd.Err() }()
	select {
	case <-signals:
		log.Print("stopping")
		return nil
	case err := <-cases:
		return err
	}
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// startEtcd runs a single-member etcd inside this process.
func startEtcd(dataDir string, clientPort, peerPort int) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Dir = dataDir
	client, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", clientPort))
	peer, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", peerPort))
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{filepath.Join(filepath.Dir(dataDir), "etcd.log")}
	// Test data: a crash loses nothing that matters, and fsync on a busy disk is slow.
	cfg.UnsafeNoFsync = true
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, err
	case <-time.After(time.Minute):
		e.Close()
		return nil, errors.New("etcd was not ready within a minute")
	}
}
