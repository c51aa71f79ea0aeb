package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// procs starts the servers a scenario needs and kills every one of them, with its process group,
// when the run ends. Only loopback addresses are ever used.
type procs struct {
	dir string // temporary root for data directories and logs

	mu   sync.Mutex
	all  []*proc
	cmds []string // every command line started, for the results file
}

// proc is one started server.
type proc struct {
	name    string
	cmd     *exec.Cmd
	log     string
	http    string // host:port of its HTTP server
	admin   string // host:port of an ingester's admin HTTP server (shutdown, flush, pprof); "" otherwise
	dataDir string
	args    []string
	bin     string
	done    chan struct{}
	started time.Time
}

func (p *procs) start(name, bin string, args []string, httpAddr, dataDir string) (*proc, error) {
	logPath := filepath.Join(p.dir, name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// Own process group, so the cleanup kills children too; Pdeathsig, so nothing outlives a
	// runner that is itself killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	pr := &proc{name: name, cmd: cmd, log: logPath, http: httpAddr, dataDir: dataDir, args: args, bin: bin, done: make(chan struct{}), started: time.Now()}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		_ = cmd.Wait()
		lf.Close()
		close(pr.done)
	}()
	p.mu.Lock()
	p.all = append(p.all, pr)
	p.cmds = append(p.cmds, filepath.Base(bin)+" "+strings.Join(args, " "))
	p.mu.Unlock()
	return pr, nil
}

// restart starts p's command line again (same data directory) and returns the new proc.
func (p *procs) restart(pr *proc) (*proc, error) {
	np, err := p.start(pr.name+"-restart", pr.bin, pr.args, pr.http, pr.dataDir)
	if err != nil {
		return nil, err
	}
	np.admin = pr.admin
	return np, nil
}

// kill sends SIGKILL to the process group and waits for the process to exit.
func (pr *proc) kill() {
	if pr.cmd.Process != nil {
		_ = syscall.Kill(-pr.cmd.Process.Pid, syscall.SIGKILL)
	}
	select {
	case <-pr.done:
	case <-time.After(10 * time.Second):
	}
}

func (pr *proc) exited() bool {
	select {
	case <-pr.done:
		return true
	default:
		return false
	}
}

// tail returns the end of the process's log, for error messages.
func (pr *proc) tail() string {
	b, _ := os.ReadFile(pr.log)
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return string(b)
}

// killAll kills every process started, and removes nothing: the caller removes dir.
func (p *procs) killAll() {
	p.mu.Lock()
	all := p.all
	p.mu.Unlock()
	for _, pr := range all {
		pr.kill()
	}
}

// waitHTTP polls http://addr+path until it answers 200, the process exits, or the timeout passes.
func waitHTTP(ctx context.Context, pr *proc, path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: time.Second}
	for {
		resp, err := c.Get("http://" + pr.http + path)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if pr.exited() {
			return fmt.Errorf("%s exited before %s was ready; log:\n%s", pr.name, path, pr.tail())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: %s not ready after %s; log:\n%s", pr.name, path, timeout, pr.tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freeAddrs returns n distinct free 127.0.0.1 ports as host:port.
func freeAddrs(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// metrics scrapes http://addr/metrics and returns each metric name's value summed over its
// series (histograms and summaries keep their _sum/_count/_bucket names).
func metrics(addr string) (map[string]float64, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/metrics: %s", addr, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		rest := line[len(name):]
		if strings.HasPrefix(rest, "{") {
			// Label values may hold spaces or braces; the value follows the last '}'.
			j := strings.LastIndexByte(rest, '}')
			if j < 0 {
				continue
			}
			rest = rest[j+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	return out, sc.Err()
}

// httpStatus returns the status code of a request, or 0 on a transport error.
func httpStatus(method, url, contentType string, body io.Reader) (int, []byte, error) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return 0, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	c := &http.Client{Timeout: 5 * time.Minute}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}
