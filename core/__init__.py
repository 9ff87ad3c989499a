"""The base layer: answer types, labels, errors, time, settings and output — imported by every other
package, importing none of them (docs/architecture.md)."""
