# Pre-deploy gate: is this host healthy enough to start (or restart) the stack?
#
# Input (DESIGN.md §7): {"disk_free_gb", "disk_path", "cpu_load_1m", "cpu_count", "memory_used_percent",
# "memory_available_gb"}. Thresholds come from data.swiftdeploy.thresholds (policies/data.json merged with the
# manifest's policy.thresholds) - never literals here. A value equal to its threshold passes.
# Fail closed: a missing or mistyped field, or a missing threshold, is a violation, so it can never allow.
package swiftdeploy.infrastructure

import rego.v1

# A path into data, not object.get(data, ...): reading all of `data` makes every package depend on every other
# (the *_test packages included), which `opa check --strict` rejects as recursion.
thresholds := data.swiftdeploy.thresholds if is_object(data.swiftdeploy.thresholds)

else := {}

inp := input if is_object(input)

else := {}

# Fields the rules read (numbers, required) and fields only reported (checked when present).
required_numbers := ["disk_free_gb", "cpu_load_1m", "memory_used_percent"]

optional_numbers := ["cpu_count", "memory_available_gb"]

percent_fields := {"memory_used_percent"}

used_thresholds := ["min_disk_free_gb", "max_cpu_load", "max_memory_used_percent"]

violation(rule, message, observed, threshold, unit) := {
	"rule": rule,
	"message": message,
	"observed": observed,
	"threshold": threshold,
	"unit": unit,
}

input_violation(rule, field, message, observed) := object.union(
	violation(rule, message, observed, null, ""),
	{"field": field},
)

# A usable number: a JSON number that is not negative (facts are never negative).
valid_number(x) if {
	is_number(x)
	x >= 0
}

# The well-typed facts the rules read (a malformed one is absent here, so no rule can misfire on it).
facts := {name: value | some name, value in inp; valid_number(value)}

# Usable thresholds (numbers only); a rule whose threshold is missing cannot fire, and threshold_invalid denies.
th := {name: value | some name, value in thresholds; is_number(value)}

# --- malformed input ---

deny contains input_violation("input_type", "input", msg, type_name(input)) if {
	not is_object(input)
	msg := "the infrastructure input must be a JSON object of host facts"
}

deny contains input_violation("input_missing", field, msg, null) if {
	some field in required_numbers
	not field in object.keys(inp)
	msg := sprintf("input.%s is missing: the host fact could not be read or was not sent", [field])
}

deny contains input_violation("input_type", field, msg, inp[field]) if {
	some field in array.concat(required_numbers, optional_numbers)
	field in object.keys(inp)
	not is_number(inp[field])
	msg := sprintf("input.%s must be a number, got %s", [field, type_name(inp[field])])
}

deny contains input_violation("input_range", field, msg, inp[field]) if {
	some field in array.concat(required_numbers, optional_numbers)
	is_number(inp[field])
	inp[field] < 0
	msg := sprintf("input.%s must not be negative, got %v", [field, inp[field]])
}

deny contains input_violation("input_range", field, msg, inp[field]) if {
	some field in percent_fields
	is_number(inp[field])
	inp[field] > 100
	msg := sprintf("input.%s is a percentage and cannot exceed 100, got %v", [field, inp[field]])
}

deny contains input_violation("input_type", "disk_path", msg, inp.disk_path) if {
	"disk_path" in object.keys(inp)
	not is_string(inp.disk_path)
	msg := sprintf("input.disk_path must be a string, got %s", [type_name(inp.disk_path)])
}

deny contains violation("threshold_invalid", msg, object.get(thresholds, name, null), null, "") if {
	some name in used_thresholds
	not name in object.keys(th)
	msg := sprintf("threshold %s is missing or not a number: fix data.json or the manifest's policy.thresholds", [name])
}

# --- rules ---

deny contains violation("disk_free", msg, facts.disk_free_gb, th.min_disk_free_gb, "GB") if {
	facts.disk_free_gb < th.min_disk_free_gb
	path := object.get(inp, "disk_path", "the deploy filesystem")
	msg := sprintf("only %v GB free on %v, below the minimum of %v GB: free some disk space", [
		facts.disk_free_gb, path, th.min_disk_free_gb,
	])
}

deny contains violation("cpu_load", msg, facts.cpu_load_1m, th.max_cpu_load, "load") if {
	facts.cpu_load_1m > th.max_cpu_load
	msg := sprintf("1-minute load average %v is above the maximum of %v: wait for the host to calm down", [
		facts.cpu_load_1m, th.max_cpu_load,
	])
}

deny contains violation("memory_used", msg, facts.memory_used_percent, th.max_memory_used_percent, "%") if {
	facts.memory_used_percent > th.max_memory_used_percent
	msg := sprintf("memory used %v %% is above the maximum of %v %%: free some memory", [
		facts.memory_used_percent, th.max_memory_used_percent,
	])
}

# --- the answer ---

verdict := "deny" if count(deny) > 0

else := "allow"

decision := {
	"allow": verdict == "allow",
	"verdict": verdict,
	"violations": [v | some v in deny],
}
