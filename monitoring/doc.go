// Package monitoring holds what an operator loads into their own Prometheus to watch a raftingest
// cluster: alerts.yml, the alerting rules, with alerts.test.yml, their promtool unit tests. It has
// no code; its tests check the rules with promtool and that every metric they name is one the code
// exports, so that a renamed metric cannot leave an alert that silently never fires.
package monitoring
