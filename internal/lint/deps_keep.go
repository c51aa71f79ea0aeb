package lint

// Imports of modules that packages under construction use, so that `go mod tidy` keeps them while
// those packages land. Remove an entry once a real package imports the module.
import (
	_ "github.com/anishathalye/porcupine"
	_ "github.com/prometheus/prometheus/promql"
)
