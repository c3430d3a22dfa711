"""The decomposer's own evaluation: `metrics` (quality against gold records), `evaluate`
(several decomposers side by side on a split), `calibrate` (the gate's threshold),
`speed` (output formats and backends), `traffic` (the 9:1 traffic mix)."""
