package main

import (
	"os"
	"strconv"
	"strings"
)

// sessionPids lists the live (not zombie) processes whose session id is sid, from /proc.
func sessionPids(sid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		stat, err := os.ReadFile("/proc/" + entry.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name (field 2) may hold spaces and parentheses: parse after the last ')'.
		text := string(stat)
		fields := strings.Fields(text[strings.LastIndex(text, ")")+2:])
		if len(fields) < 4 || fields[0] == "Z" {
			continue
		}
		if s, err := strconv.Atoi(fields[3]); err == nil && s == sid {
			pids = append(pids, pid)
		}
	}
	return pids
}
