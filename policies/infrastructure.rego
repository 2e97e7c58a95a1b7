# Pre-deploy gate: is this host healthy enough to start (or restart) the stack?
#
# Input (docs/contracts.md#inputs): {"disk_free_gb", "disk_path", "cpu_load_1m", "cpu_count", "memory_used_percent",
# "memory_available_gb"}, and from `deploy` also {"running_version", "running_image", "requested_version",
# "requested_image", "direct"}. Thresholds come from data.swiftdeploy.thresholds (policies/data.json merged with the
# manifest's policy.thresholds) - never literals here. A value equal to its threshold passes.
# Fail closed: a missing or mistyped field, or a missing threshold, is a violation, so it can never allow.
# Every message says which threshold to change.
package swiftdeploy.infrastructure

import rego.v1

# The data document, not `data` itself: a reference to all of `data` depends on every rule (OPA refuses the
# cycle, regorus does not notice it).
default thresholds := {}

thresholds := data.swiftdeploy.thresholds

inp := input if is_object(input)

else := {}

# The CPU rule: `max_cpu_load` (the whole host's load), when set, replaces the per-core rule
# (`max_cpu_load_per_core`: load divided by cpu_count), which is the default.
per_core if not "max_cpu_load" in object.keys(thresholds)

# Fields the rules read (numbers, required) and fields only reported (checked when present).
required_numbers := ["disk_free_gb", "cpu_load_1m", "memory_used_percent", "cpu_count"] if per_core

else := ["disk_free_gb", "cpu_load_1m", "memory_used_percent"]

optional_numbers := [f | some f in ["cpu_count", "memory_available_gb"]; not f in required_numbers]

percent_fields := {"memory_used_percent"}

used_thresholds := ["min_disk_free_gb", "max_cpu_load_per_core", "max_memory_used_percent"] if per_core

else := ["min_disk_free_gb", "max_cpu_load", "max_memory_used_percent"]

# What `deploy` sends about the stable app: what runs (null when nothing runs or it is unknown), what the manifest
# asks for; `direct` is true for `deploy --direct`.
release_fields := ["running_version", "running_image", "requested_version", "requested_image"]

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

deny contains input_violation("input_range", "cpu_count", msg, inp.cpu_count) if {
	is_number(inp.cpu_count)
	inp.cpu_count < 1
	msg := sprintf("input.cpu_count must be at least 1, got %v", [inp.cpu_count])
}

deny contains input_violation("input_type", field, msg, inp[field]) if {
	some field in release_fields
	field in object.keys(inp)
	not is_string(inp[field])
	not is_null(inp[field])
	msg := sprintf("input.%s must be a string or null, got %s", [field, type_name(inp[field])])
}

deny contains input_violation("input_type", "direct", msg, inp.direct) if {
	"direct" in object.keys(inp)
	not is_boolean(inp.direct)
	msg := sprintf("input.direct must be true or false, got %s", [type_name(inp.direct)])
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

deny contains violation("threshold_invalid", msg, thresholds.allow_direct_deploy, null, "") if {
	"allow_direct_deploy" in object.keys(thresholds)
	not is_boolean(thresholds.allow_direct_deploy)
	msg := "threshold allow_direct_deploy must be true or false: fix data.json or the manifest's policy.thresholds"
}

# --- rules ---

deny contains violation("disk_free", msg, facts.disk_free_gb, th.min_disk_free_gb, "GB") if {
	facts.disk_free_gb < th.min_disk_free_gb
	path := object.get(inp, "disk_path", "the deploy filesystem")
	msg := sprintf(
		"only %v GB free on %v, below the minimum of %v GB: free some disk space, or lower policy.thresholds.min_disk_free_gb",
		[facts.disk_free_gb, path, th.min_disk_free_gb],
	)
}

deny contains violation("cpu_load", msg, facts.cpu_load_1m, th.max_cpu_load, "load") if {
	facts.cpu_load_1m > th.max_cpu_load
	msg := sprintf(
		"1-minute load average %v is above the maximum of %v: wait for the host to calm down, or raise policy.thresholds.max_cpu_load",
		[facts.cpu_load_1m, th.max_cpu_load],
	)
}

# Rounded to 2 decimals so the observed value reads like the facts it is made of.
load_per_core := round((facts.cpu_load_1m / facts.cpu_count) * 100) / 100 if facts.cpu_count >= 1

deny contains violation("cpu_load_per_core", msg, load_per_core, th.max_cpu_load_per_core, "load/core") if {
	per_core
	facts.cpu_load_1m > th.max_cpu_load_per_core * facts.cpu_count
	msg := sprintf(
		"1-minute load average %v on %v CPUs is %v per core, above the maximum of %v per core: wait for the host to calm down, or raise policy.thresholds.max_cpu_load_per_core",
		[facts.cpu_load_1m, facts.cpu_count, load_per_core, th.max_cpu_load_per_core],
	)
}

deny contains violation("memory_used", msg, facts.memory_used_percent, th.max_memory_used_percent, "%") if {
	facts.memory_used_percent > th.max_memory_used_percent
	msg := sprintf(
		"memory used %v %% is above the maximum of %v %%: free some memory, or raise policy.thresholds.max_memory_used_percent",
		[facts.memory_used_percent, th.max_memory_used_percent],
	)
}

# A new version or image straight onto a running stable skips the canary gate: denied unless allowed.
release_changes contains sprintf("version %v -> %v", [inp.running_version, inp.requested_version]) if {
	is_string(inp.running_version)
	is_string(inp.requested_version)
	inp.running_version != inp.requested_version
}

release_changes contains sprintf("image %v -> %v", [inp.running_image, inp.requested_image]) if {
	is_string(inp.running_image)
	is_string(inp.requested_image)
	inp.running_image != inp.requested_image
}

direct_allowed if thresholds.allow_direct_deploy == true

direct_allowed if inp.direct == true

deny contains violation("direct_version_change", msg, inp.requested_version, null, "") if {
	count(release_changes) > 0
	not direct_allowed
	changes := concat(", ", sort([c | some c in release_changes]))
	msg := sprintf(
		"deploy would replace the running stable directly (%v) without a canary: put the new release in canary.image/canary.version and run `swiftdeploy promote canary` then `swiftdeploy promote stable` (or `swiftdeploy rollout`); to replace stable anyway run `swiftdeploy deploy --direct`, or set policy.thresholds.allow_direct_deploy: true",
		[changes],
	)
}

# --- the answer ---

verdict := "deny" if count(deny) > 0

else := "allow"

decision := {
	"allow": verdict == "allow",
	"verdict": verdict,
	"violations": [v | some v in deny],
}
