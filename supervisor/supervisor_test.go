package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A command killed with SIGKILL leaves a child behind in its session; the supervisor ends
// that child and reports the kill as 128+9.
func TestWhatAKilledCommandLeftBehindIsEnded(t *testing.T) {
	binary := t.TempDir() + "/gpuserve-supervise"
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	pidFile := t.TempDir() + "/child.pid"
	// The shell starts a long sleep in the background, writes its pid, then kills itself.
	script := "sleep 300 & echo $! > " + pidFile + "; kill -9 $$"
	cmd := exec.Command(binary, "sh", "-c", script)
	err := cmd.Run()
	status := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if err == nil || status.ExitStatus() != 128+9 {
		t.Fatalf("exit status %d (%v), want 137", status.ExitStatus(), err)
	}
	raw, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	child, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	deadline := time.Now().Add(2 * time.Second)
	for alive(child) {
		if time.Now().After(deadline) {
			t.Fatalf("the orphaned sleep (pid %d) is still alive", child)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The command's own exit status passes through.
func TestTheExitStatusIsTheCommands(t *testing.T) {
	binary := t.TempDir() + "/gpuserve-supervise"
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(binary, "sh", "-c", "exit 3")
	_ = cmd.Run()
	if got := cmd.ProcessState.ExitCode(); got != 3 {
		t.Fatalf("exit status %d, want 3", got)
	}
}

// alive: the process exists and is not a zombie waiting for a reaper.
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	text := string(stat)
	fields := strings.Fields(text[strings.LastIndex(text, ")")+2:])
	return len(fields) > 0 && fields[0] != "Z"
}
