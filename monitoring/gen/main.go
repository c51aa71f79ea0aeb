// Command gen writes the dashboards monitoring.Dashboards builds into monitoring/dashboards/ (run
// by `go generate ./monitoring/`, from the monitoring directory).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/raftingest/raftingest/monitoring"
)

func main() {
	ds, err := monitoring.Dashboards()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	for name, b := range ds {
		if err := os.WriteFile(filepath.Join("dashboards", name), b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
	}
}
