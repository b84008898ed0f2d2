package main

import (
	"cmp"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of /proc CPU times (USER_HZ), 100 on every Linux architecture Go supports.
const userHZ = 100

// infraNames maps the process names of the local servers to what the table calls them, so that a phase
// shows where the two cores went: generator, API, consumer, Kafka, MariaDB or Redis.
var infraNames = map[string]string{"java": "kafka", "mariadbd": "mariadb", "mysqld": "mariadb", "redis-server": "redis"}

// cpuWatch samples /proc. Every method is a no-op where /proc does not exist.
type cpuWatch struct {
	pids map[string][]int
}

func newCPUWatch() *cpuWatch {
	w := &cpuWatch{pids: map[string][]int{"epro-bench": {os.Getpid()}}}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(filepath.Join(d, "comm"))
		if err != nil {
			continue
		}
		name, ok := infraNames[strings.TrimSpace(string(comm))]
		if !ok {
			continue
		}
		// Only the broker: a Maven build or another JVM on the machine is noise, not Kafka.
		if cmdline, _ := os.ReadFile(filepath.Join(d, "cmdline")); name == "kafka" && !strings.Contains(string(cmdline), "kafka.Kafka") {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(d)); err == nil {
			w.pids[name] = append(w.pids[name], pid)
		}
	}
	return w
}

func (w *cpuWatch) set(name string, pid int) { w.pids[name] = []int{pid} }

// drop stops watching name, once its process has ended.
func (w *cpuWatch) drop(name string) { delete(w.pids, name) }

// micros is name's CPU time per item in µs, 0 when it was not measured.
func (u CPUUse) micros(name string, items int) float64 {
	if items == 0 {
		return 0
	}
	return u.Procs[name] / 100 * u.Seconds / float64(items) * 1e6
}

// suiteMicros is the CPU time per item in µs of every named process but the load generator.
func (u CPUUse) suiteMicros(items int) float64 {
	total := 0.0
	for name := range u.Procs {
		if name != generator {
			total += u.micros(name, items)
		}
	}
	return total
}

type cpuSample struct {
	at          time.Time
	busy, total uint64
	procs       map[string]uint64
}

func (w *cpuWatch) sample() cpuSample {
	s := cpuSample{at: time.Now(), procs: map[string]uint64{}}
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(data), "\n")
		f := strings.Fields(line)
		for i := 1; i < len(f); i++ {
			v, _ := strconv.ParseUint(f[i], 10, 64)
			s.total += v
			if i != 4 && i != 5 { // idle, iowait
				s.busy += v
			}
		}
	}
	for name, pids := range w.pids {
		for _, pid := range pids {
			s.procs[name] += procTicks(pid)
		}
	}
	return s
}

func procTicks(pid int) uint64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name is in parentheses and may contain spaces; the fields after it are fixed.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseUint(f[11], 10, 64)
	stime, _ := strconv.ParseUint(f[12], 10, 64)
	return utime + stime
}

// CPUUse is CPU time between two samples in percent of one core; the host figure is out of 100 per core.
type CPUUse struct {
	Seconds      float64            `json:"seconds"`
	HostPercent  float64            `json:"hostPercent"`
	HostCapacity float64            `json:"hostCapacity"`
	Procs        map[string]float64 `json:"procs"`
}

func cpuUse(a, b cpuSample) CPUUse {
	secs := b.at.Sub(a.at).Seconds()
	u := CPUUse{Seconds: secs, Procs: map[string]float64{}, HostCapacity: float64(100 * runtime.NumCPU())}
	if b.total > a.total {
		u.HostPercent = float64(b.busy-a.busy) / float64(b.total-a.total) * u.HostCapacity
	}
	if secs > 0 {
		for name, t := range b.procs {
			if d := t - min(t, a.procs[name]); d > 0 {
				u.Procs[name] = float64(d) / userHZ / secs * 100
			}
		}
	}
	return u
}

func (u CPUUse) String() string {
	if u.HostCapacity == 0 {
		return "n/a"
	}
	var b strings.Builder
	b.WriteString("host " + strconv.Itoa(int(u.HostPercent+0.5)) + "/" + strconv.Itoa(int(u.HostCapacity)) + "%:")
	sum := 0.0
	for _, n := range u.busiest() {
		b.WriteString(" " + n + " " + strconv.Itoa(int(u.Procs[n]+0.5)) + "%")
		sum += u.Procs[n]
	}
	// What no named process accounts for: other work on a shared machine, and the kernel.
	b.WriteString(", other " + strconv.Itoa(int(max(0, u.HostPercent-sum)+0.5)) + "%")
	return b.String()
}

// perItem is CPU time per item (report, message, row) by process. Unlike throughput it hardly depends on what
// else the machine is doing, so it says where the cores go even on a noisy host; capacity is the rate the named
// processes alone could reach with every core to themselves.
func (u CPUUse) perItem(items int, unit string) string {
	if items == 0 || u.Seconds == 0 || len(u.Procs) == 0 {
		return ""
	}
	var b strings.Builder
	total := 0.0
	for _, n := range u.busiest() {
		us := u.micros(n, items)
		if us < 0.5 {
			continue
		}
		total += us
		b.WriteString(" " + n + " " + strconv.Itoa(int(us+0.5)))
	}
	return "µs CPU per " + unit + ":" + b.String() + "; total " + strconv.Itoa(int(total+0.5)) +
		" → " + strconv.Itoa(int(u.HostCapacity/100*1e6/total)) + " " + unit + "s/s if they had the cores to themselves"
}

// busiest names the processes, the busiest first.
func (u CPUUse) busiest() []string {
	return slices.SortedFunc(maps.Keys(u.Procs), func(a, b string) int { return cmp.Compare(u.Procs[b], u.Procs[a]) })
}
