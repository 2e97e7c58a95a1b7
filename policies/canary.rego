# Promotion gate: is the canary good enough to become stable?
#
# Input (docs/contracts.md#inputs, docs/policies.md): {"window_seconds", "canary": TRACK, "stable": TRACK or null, "evidence": EVIDENCE}.
# TRACK = {"requests", "errors", "error_rate_percent", "p50_ms", "p99_ms"} (+ "slower_than_ms" when the track
# exposes its latency histogram) over one window. EVIDENCE is computed by swiftdeploy from the tracks: counts and
# confidence bounds (exact for one window, confidence sequences while `promote stable` watches). This policy only
# compares them with the thresholds in data.swiftdeploy.thresholds; it computes no statistics itself.
#
# Verdict:
# - deny when the data show with confidence (deny_confidence_percent) that the canary breaks a rule:
#   its error rate or slow-request share is above the maximum, or it is clearly worse than stable;
# - allow only when the data show with confidence (allow_confidence_percent) that it does not: its error rate and
#   slow-request share are below the rates that count as bad, over at least min_requests requests;
# - otherwise inconclusive, saying how many more canary requests it would take.
# "P99 <= max_p99_latency_ms" is the same statement as "at most max_slow_percent (1 %) of the requests are slower
# than max_p99_latency_ms", and that is how it is judged: by counting slow requests in the histogram.
package swiftdeploy.canary

import rego.v1

# The data document, not `data` itself: a reference to all of `data` depends on every rule (OPA refuses the
# cycle, regorus does not notice it).
default thresholds := {}

thresholds := data.swiftdeploy.thresholds

inp := input if is_object(input)

else := {}

track_numbers := ["requests", "errors", "error_rate_percent"]

track_counts := ["requests", "errors"]

latency_fields := ["p50_ms", "p99_ms"]

used_thresholds := [
	"max_error_rate_percent", "bad_error_rate_percent", "max_p99_latency_ms", "max_slow_percent",
	"bad_slow_percent", "min_requests", "max_error_rate_ratio", "max_p99_ratio", "min_p99_ms_for_ratio",
	"deny_confidence_percent", "ratio_confidence_percent", "allow_confidence_percent",
]

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

# A judgement backed by evidence: the point value, its confidence bound, the counts and the window it rests on.
finding(rule, message, observed, threshold, unit, bound, kind, confidence, counts) := {
	"rule": rule,
	"message": message,
	"observed": observed,
	"threshold": threshold,
	"unit": unit,
	"bound": bound,
	"bound_kind": kind,
	"confidence_percent": confidence,
	"counts": counts,
	"window_seconds": window,
}

# An allow bound not cleared yet, with how many more canary requests (and seconds) would settle it.
unproven(rule, message, e, threshold, counts) := {
	"rule": rule,
	"message": message,
	"observed": e.observed_percent,
	"threshold": threshold,
	"unit": "%",
	"bound": e.upper_percent,
	"bound_kind": "upper",
	"confidence_percent": th.allow_confidence_percent,
	"counts": counts,
	"window_seconds": window,
	"requests_needed": e.requests_needed,
	"seconds_needed": e.seconds_needed,
}

# Usable thresholds (numbers only); a rule whose threshold is missing cannot fire, and threshold_invalid denies.
th := {name: value | some name, value in thresholds; is_number(value)}

# --- malformed input (each names the field; any of them denies) ---

deny contains input_violation("input_type", "input", msg, type_name(input)) if {
	not is_object(input)
	msg := "the canary input must be a JSON object {window_seconds, canary, stable, evidence}"
}

missing_hint := {
	"window_seconds": "the length of the metrics window in seconds",
	"canary": "the canary's window metrics",
	"stable": "stable's window metrics, or null when there is no baseline",
	"evidence": "the evidence swiftdeploy computes from the tracks (`policy eval` derives it from well-formed tracks)",
}

deny contains input_violation("input_missing", field, msg, null) if {
	some field, hint in missing_hint
	not field in object.keys(inp)
	msg := sprintf("input.%s is missing: send %s", [field, hint])
}

deny contains input_violation("input_type", "window_seconds", msg, inp.window_seconds) if {
	"window_seconds" in object.keys(inp)
	not positive_number(inp.window_seconds)
	msg := sprintf("input.window_seconds must be a number above 0, got %v", [inp.window_seconds])
}

deny contains input_violation("input_type", "canary", msg, type_name(inp.canary)) if {
	"canary" in object.keys(inp)
	not is_object(inp.canary)
	msg := sprintf("input.canary must be an object of window metrics, got %s", [type_name(inp.canary)])
}

deny contains input_violation("input_type", "stable", msg, type_name(inp.stable)) if {
	"stable" in object.keys(inp)
	not is_object(inp.stable)
	not is_null(inp.stable)
	msg := sprintf("input.stable must be an object of window metrics or null, got %s", [type_name(inp.stable)])
}

positive_number(x) if {
	is_number(x)
	x > 0
}

non_negative(x) if {
	is_number(x)
	x >= 0
}

# A count: whole, and at most 2^53 - 1 (beyond, floats are all "whole" to regorus while OPA's floor of 1e300 is not
# the number itself; no window counts that many requests).
whole(x) if {
	non_negative(x)
	x <= 9007199254740991
	floor(x) == x
}

# The tracks that are objects, by name.
tracks := {name: inp[name] | some name in ["canary", "stable"]; is_object(inp[name])}

deny contains input_violation("input_missing", sprintf("%s.%s", [name, f]), msg, null) if {
	some name, t in tracks
	some f in array.concat(track_numbers, latency_fields)
	not f in object.keys(t)
	msg := sprintf("input.%s.%s is missing", [name, f])
}

deny contains input_violation("input_type", sprintf("%s.%s", [name, f]), msg, t[f]) if {
	some name, t in tracks
	some f in track_numbers
	f in object.keys(t)
	not non_negative(t[f])
	msg := sprintf("input.%s.%s must be a number >= 0, got %v", [name, f, t[f]])
}

deny contains input_violation("input_type", sprintf("%s.%s", [name, f]), msg, t[f]) if {
	some name, t in tracks
	some f in track_counts
	non_negative(t[f])
	not whole(t[f])
	msg := sprintf("input.%s.%s must be a whole number of requests, got %v", [name, f, t[f]])
}

deny contains input_violation("input_type", sprintf("%s.%s", [name, f]), msg, t[f]) if {
	some name, t in tracks
	some f in latency_fields
	f in object.keys(t)
	not non_negative(t[f])
	not empty_track_null(t, t[f])
	msg := sprintf("input.%s.%s must be a number >= 0 (null only when the track saw no requests), got %v", [
		name, f, t[f],
	])
}

deny contains input_violation("input_type", sprintf("%s.slower_than_ms", [name]), msg, type_name(t.slower_than_ms)) if {
	some name, t in tracks
	"slower_than_ms" in object.keys(t)
	not slow_table(t.slower_than_ms)
	msg := sprintf("input.%s.slower_than_ms must be an object {bound_ms: requests slower than it}", [name])
}

slow_table(x) if {
	is_object(x)
	every _, n in x {
		whole(n)
	}
}

deny contains input_violation("input_range", sprintf("%s.errors", [name]), msg, t.errors) if {
	some name, t in tracks
	non_negative(t.errors)
	non_negative(t.requests)
	t.errors > t.requests
	msg := sprintf("input.%s.errors (%v) cannot exceed input.%s.requests (%v)", [name, t.errors, name, t.requests])
}

empty_track_null(t, value) if {
	is_null(value)
	t.requests == 0
}

deny contains violation("threshold_invalid", msg, object.get(thresholds, name, null), null, "") if {
	some name in used_thresholds
	not name in object.keys(th)
	msg := sprintf("threshold %s is missing or not a number: fix data.json or the manifest's policy.thresholds", [name])
}

# --- malformed evidence ---

# The evidence fields, by kind and part ("." is the evidence object itself); docs/policies.md describes each.
# A count is a whole number >= 0, a percent a number in [0, 100]; "_or_null" kinds may also be null.
rate_spec := {
	"count": ["count", "count_max", "requests"],
	"percent": ["observed_percent", "lower_percent", "upper_percent"],
}

spec := {
	"error_rate": object.union(rate_spec, {"count_or_null": ["requests_needed"], "number_or_null": ["seconds_needed"]}),
	"p99_latency": object.union(rate_spec, {
		"count_or_null": ["requests_needed"], "number_or_null": ["seconds_needed"],
		"number": ["latency_ms"],
	}),
	"error_rate_vs_stable": {
		"count": ["canary_errors", "canary_requests", "stable_errors", "stable_requests"],
		"number": ["lower_ratio"], "number_or_null": ["observed_ratio"],
	},
	"p99_vs_stable": {
		"count": ["count", "count_max", "requests", "stable_requests"],
		"percent": ["observed_percent", "lower_percent", "upper_percent"],
		"number": ["latency_ms", "stable_p99_ms"],
	},
	".": {
		"count_or_null": ["requests_needed"], "number_or_null": ["seconds_needed"],
		"number": ["canary_requests_per_second"],
	},
}

evidence_parts := {"error_rate", "p99_latency"}

optional_parts := {"error_rate_vs_stable", "p99_vs_stable"}

percent(x) if {
	non_negative(x)
	x <= 100
}

number_or_null(x) if non_negative(x)

number_or_null(x) if is_null(x)

count_or_null(x) if whole(x)

count_or_null(x) if is_null(x)

ev_raw := inp.evidence

deny contains input_violation("input_type", "evidence", msg, type_name(ev_raw)) if {
	"evidence" in object.keys(inp)
	not is_object(ev_raw)
	msg := sprintf("input.evidence must be an object, got %s", [type_name(ev_raw)])
}

ev := ev_raw if is_object(ev_raw)

deny contains input_violation("input_type", "evidence.method", msg, method) if {
	method := object.get(ev, "method", null)
	not method in {"fixed", "sequential"}
	msg := "input.evidence.method must be \"fixed\" or \"sequential\""
}

# The parts present and shaped as objects (the optional ones may be null: no stable baseline).
parts := {name: ev[name] | some name in (evidence_parts | optional_parts); is_object(ev[name])}

checked := object.union(parts, {".": ev}) if is_object(ev)

else := {}

deny contains input_violation("input_type", sprintf("evidence.%s", [name]), msg, type_name(object.get(ev, name, null))) if {
	is_object(ev)
	some name in evidence_parts
	not name in object.keys(parts)
	msg := sprintf("input.evidence.%s must be an object", [name])
}

deny contains input_violation("input_type", sprintf("evidence.%s", [name]), msg, type_name(part)) if {
	is_object(ev)
	some name in optional_parts
	not name in object.keys(parts)
	part := object.get(ev, name, null)
	not is_null(part)
	msg := sprintf("input.evidence.%s must be an object, or null when there is no stable baseline", [name])
}

bad_fields contains [name, f] if {
	some name, part in checked
	some f in object.get(spec[name], "count", [])
	value := object.get(part, f, null)
	not whole(value)
}

bad_fields contains [name, f] if {
	some name, part in checked
	some f in object.get(spec[name], "percent", [])
	value := object.get(part, f, null)
	not percent(value)
}

bad_fields contains [name, f] if {
	some name, part in checked
	some f in object.get(spec[name], "number", [])
	value := object.get(part, f, null)
	not non_negative(value)
}

bad_fields contains [name, f] if {
	some name, part in checked
	some f in object.get(spec[name], "number_or_null", [])
	value := object.get(part, f, null)
	not number_or_null(value)
}

bad_fields contains [name, f] if {
	some name, part in checked
	some f in object.get(spec[name], "count_or_null", [])
	value := object.get(part, f, null)
	not count_or_null(value)
}

deny contains input_violation("input_type", field, msg, null) if {
	some [name, f] in bad_fields
	field := evidence_field(name, f)
	msg := sprintf("input.%s is missing or malformed (see docs/policies.md for the evidence fields)", [field])
}

evidence_field(".", f) := sprintf("evidence.%s", [f])

evidence_field(name, f) := sprintf("evidence.%s.%s", [name, f]) if name != "."

# Evidence is computed for given thresholds (confidence levels, the latency it counts at, ...); evidence for other
# thresholds, or for other tracks, is refused rather than misread.
deny contains violation("evidence_mismatch", msg, got, expected, "") if {
	is_object(ev)
	echo := object.get(ev, "thresholds", {})
	some name in evidence_thresholds
	expected := th[name]
	got := object.get(echo, name, null)
	not got == expected
	msg := sprintf("the evidence was computed with %s = %v, but the policy's threshold is %v: recompute it", [
		name, got, expected,
	])
}

evidence_thresholds := [
	"deny_confidence_percent", "ratio_confidence_percent", "allow_confidence_percent", "max_p99_latency_ms", "max_p99_ratio",
	"min_p99_ms_for_ratio", "bad_error_rate_percent", "bad_slow_percent", "min_requests",
]

deny contains violation("evidence_mismatch", msg, [e[f], c[g]], null, "") if {
	some [part, f, g] in [
		["error_rate", "count", "errors"],
		["error_rate", "requests", "requests"],
		["p99_latency", "requests", "requests"],
	]
	e := good[part]
	c := metrics.canary
	not e[f] == c[g]
	msg := sprintf("evidence.%s.%s (%v) does not match input.canary.%s (%v): the evidence is about other data", [
		part, f, e[f], g, c[g],
	])
}

# --- well-typed views the rules read (undefined when malformed, so a rule cannot misfire) ---

metrics := {name: {f: v | some f, v in t; non_negative(v)} | some name, t in tracks}

bad_parts := {name | some [name, _] in bad_fields}

good := {name: part | some name, part in parts; not name in bad_parts}

window := inp.window_seconds if positive_number(inp.window_seconds)

else := "?"

secs := num(window) if is_number(window)

else := window

# Numbers in messages read like swiftdeploy.format.format_number: 2 decimals from 1 up, 3 significant digits below.
num(x) := round(x * 100) / 100 if {
	abs(x) >= 1
} else := round(x * 1000) / 1000 if {
	abs(x) >= 0.1
} else := round(x * 10000) / 10000 if {
	abs(x) >= 0.01
} else := round(x * 100000) / 100000 if {
	abs(x) >= 0.001
} else := round(x * 1000000) / 1000000

slow_count(part) := sprintf("%v", [part.count]) if part.count == part.count_max

else := sprintf("%v to %v", [part.count, part.count_max])

error_counts(part) := {"errors": part.count, "requests": part.requests}

# Slow requests are an interval [slow, slow_max] when the latency falls between two histogram bounds.
slow_counts(part) := {"slow": part.count, "slow_max": part.count_max, "requests": part.requests}

# --- deny: the data show with confidence that the canary breaks a rule ---

deny contains finding(
	"error_rate", msg, e.observed_percent, th.max_error_rate_percent, "%",
	e.lower_percent, "lower", th.deny_confidence_percent, error_counts(e),
) if {
	e := good.error_rate
	e.lower_percent > th.max_error_rate_percent
	msg := sprintf("%v of %v canary requests failed over %v s (%v%%): the error rate is above %v%% with %v%% confidence, over the maximum of %v%%", [
		e.count, e.requests, secs, num(e.observed_percent), num(e.lower_percent), th.deny_confidence_percent,
		th.max_error_rate_percent,
	])
}

deny contains finding(
	"p99_latency", msg, e.observed_percent, th.max_slow_percent, "%",
	e.lower_percent, "lower", th.deny_confidence_percent, slow_counts(e),
) if {
	e := good.p99_latency
	e.lower_percent > th.max_slow_percent
	msg := sprintf("%v of %v canary requests took longer than %v ms over %v s (%v%%): more than %v%% are that slow with %v%% confidence, so the P99 is above %v ms (at most %v%% may be slower)", [
		slow_count(e), e.requests, num(e.latency_ms), secs, num(e.observed_percent), num(e.lower_percent),
		th.deny_confidence_percent, th.max_p99_latency_ms, th.max_slow_percent,
	])
}

deny contains finding(
	"error_rate_vs_stable", msg, r.observed_ratio, th.max_error_rate_ratio, "x",
	r.lower_ratio, "lower", th.ratio_confidence_percent,
	{"canary_errors": r.canary_errors, "canary_requests": r.canary_requests, "stable_errors": r.stable_errors, "stable_requests": r.stable_requests},
) if {
	r := good.error_rate_vs_stable
	r.lower_ratio > th.max_error_rate_ratio
	msg := sprintf("canary errors %v of %v against stable's %v of %v over %v s: the canary's error rate is more than %v times stable's with %v%% confidence; at most %v times is allowed", [
		r.canary_errors, r.canary_requests, r.stable_errors, r.stable_requests, secs, num(r.lower_ratio),
		th.ratio_confidence_percent, th.max_error_rate_ratio,
	])
}

deny contains finding(
	"p99_vs_stable", msg, e.observed_percent, th.max_slow_percent, "%",
	e.lower_percent, "lower", th.deny_confidence_percent, slow_counts(e),
) if {
	e := good.p99_vs_stable
	e.stable_requests >= th.min_requests
	e.lower_percent > th.max_slow_percent
	msg := sprintf("%v of %v canary requests took longer than %v ms (%v times stable's P99 of %v ms, at least %v ms) over %v s: more than %v%% are that slow with %v%% confidence, so the canary's P99 is above that (at most %v%% may be slower)", [
		slow_count(e), e.requests, num(e.latency_ms), th.max_p99_ratio, num(e.stable_p99_ms), th.min_p99_ms_for_ratio,
		secs, num(e.lower_percent), th.deny_confidence_percent, th.max_slow_percent,
	])
}

# --- allow needs proof: what the data show the canary does NOT do ---

clears contains finding(
	"error_rate", msg, e.observed_percent, th.bad_error_rate_percent, "%",
	e.upper_percent, "upper", th.allow_confidence_percent, error_counts(e),
) if {
	e := good.error_rate
	e.upper_percent < th.bad_error_rate_percent
	msg := sprintf("%v canary requests, %v errors over %v s: error rate below %v%% with %v%% confidence (%v%% counts as bad)", [
		e.requests, e.count, secs, num(e.upper_percent), th.allow_confidence_percent, th.bad_error_rate_percent,
	])
}

clears contains finding(
	"p99_latency", msg, e.observed_percent, th.bad_slow_percent, "%",
	e.upper_percent, "upper", th.allow_confidence_percent, slow_counts(e),
) if {
	e := good.p99_latency
	e.upper_percent < th.bad_slow_percent
	msg := sprintf("%v canary requests, %v slower than %v ms over %v s: below %v%% of requests with %v%% confidence (%v%% counts as bad)", [
		e.requests, slow_count(e), num(e.latency_ms), secs, num(e.upper_percent), th.allow_confidence_percent,
		th.bad_slow_percent,
	])
}

cleared := {f.rule | some f in clears}

# What would settle an unproven rule: how many more canary requests, if the rates seen so far go on.
needed_text(e) := sprintf("; about %v more canary requests would settle it (~%v s at the current %v req/s)", [
	e.requests_needed, num(e.seconds_needed), num(ev.canary_requests_per_second),
]) if {
	e.requests_needed > 0
	is_number(e.seconds_needed)
} else := sprintf("; about %v more canary requests would settle it (no canary traffic now)", [e.requests_needed]) if {
	e.requests_needed > 0
} else := "; at the rate seen so far no number of requests would show it: the canary is probably not healthy" if {
	is_null(e.requests_needed)
} else := ""

inconclusive contains unproven("error_rate_unproven", msg, e, th.bad_error_rate_percent, error_counts(e)) if {
	e := good.error_rate
	not "error_rate" in cleared
	msg := sprintf("%v canary requests, %v errors over %v s (%v%%): cannot yet show the error rate is below %v%% (with %v%% confidence it is at most %v%%)%s", [
		e.requests, e.count, secs, num(e.observed_percent), th.bad_error_rate_percent, th.allow_confidence_percent,
		num(e.upper_percent), needed_text(e),
	])
}

inconclusive contains unproven("p99_latency_unproven", msg, e, th.bad_slow_percent, slow_counts(e)) if {
	e := good.p99_latency
	not "p99_latency" in cleared
	msg := sprintf("%v canary requests, %v slower than %v ms over %v s: cannot yet show fewer than %v%% are that slow (with %v%% confidence at most %v%%)%s", [
		e.requests, slow_count(e), num(e.latency_ms), secs, th.bad_slow_percent, th.allow_confidence_percent,
		num(e.upper_percent), needed_text(e),
	])
}

inconclusive contains violation("min_requests", msg, observed, th.min_requests, "requests") if {
	observed := metrics.canary.requests
	observed < th.min_requests
	msg := sprintf("only %v canary requests in the %v s window; at least %v are needed to judge the canary: send more traffic or lengthen policy.window_seconds", [
		observed, secs, th.min_requests,
	])
}

# --- the answer ---

# A deny names only what breaks the rules; an inconclusive names what is not shown yet.
reasons := deny if count(deny) > 0

else := inconclusive

verdict := "deny" if count(deny) > 0

else := "inconclusive" if count(inconclusive) > 0

else := "allow"

decision := {
	"allow": verdict == "allow",
	"verdict": verdict,
	"violations": [v | some v in reasons],
	"basis": [f | some f in clears],
}
