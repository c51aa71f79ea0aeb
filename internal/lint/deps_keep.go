package lint

// Imports of modules that packages under construction use, so that `go mod tidy` keeps them while
// those packages land. Remove an entry once a real package imports the module.
import (
	_ "github.com/Shopify/toxiproxy/v2"
	_ "github.com/anishathalye/porcupine"
	_ "github.com/oklog/ulid/v2"
	_ "github.com/prometheus/prometheus/promql"
	_ "github.com/prometheus/prometheus/tsdb"
	_ "github.com/thanos-io/objstore"
	_ "github.com/thanos-io/objstore/providers/filesystem"
	_ "github.com/thanos-io/objstore/providers/s3"
)
