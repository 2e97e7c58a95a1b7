# Unit tests of infrastructure.rego. Run: `swiftdeploy policy test` (embedded engine) or `opa test policies/`.
# Thresholds are pinned with `with data.swiftdeploy.thresholds as ...` so manifest overrides cannot change them.
package swiftdeploy.infrastructure_test

import rego.v1

import data.swiftdeploy.infrastructure

thresholds := {"min_disk_free_gb": 10, "max_cpu_load": 2.0, "max_memory_used_percent": 90}

healthy := {
	"disk_free_gb": 50,
	"disk_path": "/srv",
	"cpu_load_1m": 0.5,
	"cpu_count": 4,
	"memory_used_percent": 40,
	"memory_available_gb": 8,
}

decide(facts) := d if {
	d := infrastructure.decision with input as facts with data.swiftdeploy.thresholds as thresholds
}

with_fact(name, value) := object.union(healthy, {name: value})

rules(d) := {v.rule | some v in d.violations}

fields(d) := {v.field | some v in d.violations; v.field}

allows(d) if {
	d.allow == true
	d.verdict == "allow"
	count(d.violations) == 0
}

denies_only(d, rule) if {
	d.allow == false
	d.verdict == "deny"
	rules(d) == {rule}
}

test_healthy_host_allows if allows(decide(healthy))

# disk free: deny only below the minimum
test_disk_free_below_denies if {
	d := decide(with_fact("disk_free_gb", 9.99))
	denies_only(d, "disk_free")
	d.violations[0].observed == 9.99
	d.violations[0].threshold == 10
	d.violations[0].unit == "GB"
	contains(d.violations[0].message, "/srv")
}

test_disk_free_equal_allows if allows(decide(with_fact("disk_free_gb", 10)))

test_disk_free_above_allows if allows(decide(with_fact("disk_free_gb", 10.01)))

# 1-minute load average: deny only above the maximum
test_cpu_load_below_allows if allows(decide(with_fact("cpu_load_1m", 1.99)))

test_cpu_load_equal_allows if allows(decide(with_fact("cpu_load_1m", 2)))

test_cpu_load_above_denies if {
	d := decide(with_fact("cpu_load_1m", 2.01))
	denies_only(d, "cpu_load")
	d.violations[0].observed == 2.01
	d.violations[0].threshold == 2
}

# memory used: deny only above the maximum
test_memory_below_allows if allows(decide(with_fact("memory_used_percent", 89.9)))

test_memory_equal_allows if allows(decide(with_fact("memory_used_percent", 90)))

test_memory_above_denies if {
	d := decide(with_fact("memory_used_percent", 90.1))
	denies_only(d, "memory_used")
	d.violations[0].unit == "%"
}

test_every_rule_reported_at_once if {
	d := decide({"disk_free_gb": 1, "cpu_load_1m": 9, "memory_used_percent": 99})
	rules(d) == {"disk_free", "cpu_load", "memory_used"}
	d.verdict == "deny"
}

# thresholds come from data: an override moves the boundary
test_threshold_override_applies if {
	d := infrastructure.decision with input as with_fact("disk_free_gb", 50)
		with data.swiftdeploy.thresholds as object.union(thresholds, {"min_disk_free_gb": 100})
	denies_only(d, "disk_free")
	d.violations[0].threshold == 100
}

test_missing_threshold_denies if {
	d := infrastructure.decision with input as healthy
		with data.swiftdeploy.thresholds as {"min_disk_free_gb": 10, "max_cpu_load": 2}
	denies_only(d, "threshold_invalid")
}

test_non_numeric_threshold_denies if {
	d := infrastructure.decision with input as healthy
		with data.swiftdeploy.thresholds as object.union(thresholds, {"max_cpu_load": "2"})
	denies_only(d, "threshold_invalid")
}

# malformed input: a violation naming the field, never an allow
test_empty_input_denies_naming_every_field if {
	d := decide({})
	d.verdict == "deny"
	rules(d) == {"input_missing"}
	fields(d) == {"disk_free_gb", "cpu_load_1m", "memory_used_percent"}
}

test_missing_field_denies if {
	d := decide(object.remove(healthy, ["cpu_load_1m"]))
	denies_only(d, "input_missing")
	fields(d) == {"cpu_load_1m"}
}

test_string_number_denies if {
	d := decide(with_fact("disk_free_gb", "50"))
	denies_only(d, "input_type")
	fields(d) == {"disk_free_gb"}
}

test_null_fact_denies if {
	d := decide(with_fact("memory_used_percent", null))
	denies_only(d, "input_type")
	fields(d) == {"memory_used_percent"}
}

test_boolean_fact_denies if {
	d := decide(with_fact("cpu_load_1m", true))
	denies_only(d, "input_type")
	fields(d) == {"cpu_load_1m"}
}

test_negative_fact_denies if {
	d := decide(with_fact("disk_free_gb", -1))
	d.verdict == "deny"
	"input_range" in rules(d)
	fields(d) == {"disk_free_gb"}
}

test_percent_above_100_denies if {
	d := decide(with_fact("memory_used_percent", 101))
	d.verdict == "deny"
	"input_range" in rules(d)
}

test_optional_field_mistyped_denies if {
	d := decide(with_fact("cpu_count", "four"))
	denies_only(d, "input_type")
	fields(d) == {"cpu_count"}
}

test_disk_path_mistyped_denies if {
	d := decide(with_fact("disk_path", 3))
	denies_only(d, "input_type")
	fields(d) == {"disk_path"}
}

test_optional_fields_may_be_absent if allows(decide({"disk_free_gb": 50, "cpu_load_1m": 0.5, "memory_used_percent": 40}))

test_array_input_denies if {
	d := decide([1, 2])
	d.verdict == "deny"
	"input" in fields(d)
}

test_string_input_denies if {
	d := decide("healthy")
	d.verdict == "deny"
	"input" in fields(d)
}

# --- the per-core CPU rule (the default: max_cpu_load unset) ---

per_core_thresholds := {"min_disk_free_gb": 10, "max_cpu_load_per_core": 2.0, "max_memory_used_percent": 90}

decide_per_core(facts) := d if {
	d := infrastructure.decision with input as facts with data.swiftdeploy.thresholds as per_core_thresholds
}

test_per_core_busy_two_core_host_allows if allows(decide_per_core(object.union(healthy, {"cpu_load_1m": 2, "cpu_count": 2})))

test_per_core_equal_allows if allows(decide_per_core(object.union(healthy, {"cpu_load_1m": 4, "cpu_count": 2})))

test_per_core_above_denies if {
	d := decide_per_core(object.union(healthy, {"cpu_load_1m": 4.02, "cpu_count": 2}))
	denies_only(d, "cpu_load_per_core")
	d.violations[0].observed == 2.01
	d.violations[0].threshold == 2
	d.violations[0].unit == "load/core"
	contains(d.violations[0].message, "policy.thresholds.max_cpu_load_per_core")
}

test_per_core_needs_cpu_count if {
	d := decide_per_core(object.remove(healthy, ["cpu_count"]))
	denies_only(d, "input_missing")
	fields(d) == {"cpu_count"}
}

test_per_core_zero_cpus_denies if {
	d := decide_per_core(with_fact("cpu_count", 0))
	denies_only(d, "input_range")
	fields(d) == {"cpu_count"}
}

test_absolute_threshold_replaces_per_core if {
	# max_cpu_load set: a load of 5 on 1 CPU (5 per core) passes a maximum of 8
	d := infrastructure.decision with input as object.union(healthy, {"cpu_load_1m": 5, "cpu_count": 1})
		with data.swiftdeploy.thresholds as object.union(per_core_thresholds, {"max_cpu_load": 8})
	allows(d)
}

test_every_host_message_names_its_threshold if {
	d := decide_per_core({"disk_free_gb": 1, "cpu_load_1m": 90, "cpu_count": 2, "memory_used_percent": 99})
	rules(d) == {"disk_free", "cpu_load_per_core", "memory_used"}
	every v in d.violations {
		contains(v.message, sprintf("policy.thresholds.%s", [
			{
				"disk_free": "min_disk_free_gb",
				"cpu_load_per_core": "max_cpu_load_per_core",
				"memory_used": "max_memory_used_percent",
			}[v.rule],
		]))
	}
}

# --- a new release straight onto a running stable ---

release(running, requested) := object.union(healthy, {
	"running_version": running, "running_image": "api:1",
	"requested_version": requested, "requested_image": "api:1",
})

test_same_release_allows if allows(decide(release("1.0.0", "1.0.0")))

test_nothing_running_allows if allows(decide(release(null, "1.1.0")))

test_version_change_denies if {
	d := decide(release("1.0.0", "1.1.0"))
	denies_only(d, "direct_version_change")
	contains(d.violations[0].message, "version 1.0.0 -> 1.1.0")
	contains(d.violations[0].message, "promote canary")
	contains(d.violations[0].message, "deploy --direct")
	contains(d.violations[0].message, "allow_direct_deploy: true")
}

test_image_change_denies if {
	d := decide(object.union(release("1.0.0", "1.0.0"), {"requested_image": "api:2"}))
	denies_only(d, "direct_version_change")
	contains(d.violations[0].message, "image api:1 -> api:2")
}

test_direct_flag_allows if allows(decide(object.union(release("1.0.0", "1.1.0"), {"direct": true})))

test_allow_direct_threshold_allows if {
	d := infrastructure.decision with input as release("1.0.0", "1.1.0")
		with data.swiftdeploy.thresholds as object.union(thresholds, {"allow_direct_deploy": true})
	allows(d)
}

test_allow_direct_threshold_mistyped_denies if {
	d := infrastructure.decision with input as release("1.0.0", "1.0.0")
		with data.swiftdeploy.thresholds as object.union(thresholds, {"allow_direct_deploy": "yes"})
	denies_only(d, "threshold_invalid")
}

test_release_field_mistyped_denies if {
	d := decide(object.union(release("1.0.0", "1.0.0"), {"running_version": 1, "direct": "no"}))
	denies_only(d, "input_type")
	fields(d) == {"running_version", "direct"}
}
