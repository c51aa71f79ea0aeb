package depcheck

import (
	_ "github.com/prometheus/prometheus/tsdb/chunkenc"
	_ "github.com/prometheus/prometheus/model/labels"
	_ "github.com/prometheus/prometheus/prompb"
	_ "github.com/prometheus/prometheus/promql"
	_ "github.com/prometheus/prometheus/tsdb"
	_ "github.com/hashicorp/raft"
	_ "github.com/hashicorp/raft-boltdb/v2"
	_ "go.etcd.io/bbolt"
	_ "google.golang.org/grpc"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/golang/snappy"
	_ "go.uber.org/goleak"
	_ "pgregory.net/rapid"
)
