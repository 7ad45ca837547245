// gpuserve-supervise runs one command (the Pulumi CLI) in a session of its own and, once
// that command has ended for any reason (SIGKILL included), ends every process still left
// in the session: the language hosts, the policy analyzer and the dynamic providers Pulumi
// started. Nothing of an update outlives it, except what deliberately started a session of
// its own (the local Ray head and the splitter instances, which are the stack's resources).
//
// Usage: gpuserve-supervise <command> [args...]
// SIGINT, SIGTERM and SIGHUP are passed on to the command (Pulumi cancels gracefully); the
// exit status is the command's, or 128+signal when a signal ended it.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gpuserve-supervise <command> [args...]")
		os.Exit(2)
	}
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "gpuserve-supervise: cannot start %s: %v\n", os.Args[1], err)
		os.Exit(127)
	}
	session := cmd.Process.Pid
	go func() {
		for sig := range signals {
			_ = cmd.Process.Signal(sig)
		}
	}()
	err := cmd.Wait()
	left := endSession(session, 3*time.Second)
	if left > 0 {
		fmt.Fprintf(os.Stderr, "gpuserve-supervise: ended %d process(es) that %s left behind\n", left, os.Args[1])
	}
	os.Exit(exitCode(cmd, err))
}

func exitCode(cmd *exec.Cmd, err error) int {
	if err == nil {
		return 0
	}
	if status, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		if status.Signaled() {
			return 128 + int(status.Signal())
		}
		return status.ExitStatus()
	}
	return 1
}

// endSession sends SIGTERM to every process of the session, waits up to grace for them to
// go, then SIGKILLs the rest. It returns how many processes were left at first.
func endSession(sid int, grace time.Duration) int {
	first := sessionPids(sid)
	if len(first) == 0 {
		return 0
	}
	for _, pid := range first {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if len(sessionPids(sid)) == 0 {
			return len(first)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, pid := range sessionPids(sid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return len(first)
}
