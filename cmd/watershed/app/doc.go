// Package app assembles any set of Watershed services into one process:
// the all-in-one (-target=all) or a single service, the monolithic and
// microservices switch that Mimir, Loki and Tempo users know.
package app
