//! The report as one self-contained HTML page: inline CSS and SVG, no script, no font, no
//! request of any kind (its Content-Security-Policy forbids them, so a browser would refuse
//! and log one). Every number is also an attribute (`data-key`/`data-value`, `data-day`…) so
//! that a test or a script can read the page back.

use std::fmt::Write as _;

use super::{Day, Latency, Report, Run, SignatureState};
use crate::cmd::status::{Status, age};

/// Event ids listed per list at most (the counts are always whole).
const IDS_SHOWN: usize = 50;

/// The confirmation statuses in the order drawn, with their colours.
const STATUSES: [(&str, &str); 4] = [
    ("erased", "#2e7d32"),
    ("no_data", "#78909c"),
    ("no_rule", "#f9a825"),
    ("held", "#6a1b9a"),
];
const OTHER_COLOUR: &str = "#bdbdbd";

const STYLE: &str = "body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
color:#1c2430;margin:0 auto;max-width:1100px;padding:24px}\
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #dde3ea;\
padding-bottom:4px}.sub{color:#5b6776;margin:0 0 16px}\
.verdict{padding:12px 16px;border-radius:6px;margin:8px 0;font-weight:600}\
.good{background:#e8f5e9;color:#1b5e20}.bad{background:#ffebee;color:#b71c1c}\
.warn{background:#fff8e1;color:#8a5a00}\
.tiles{display:flex;flex-wrap:wrap;gap:10px}.tile{border:1px solid #dde3ea;border-radius:6px;\
padding:8px 14px;min-width:110px}.tile .n{display:block;font-size:24px;font-weight:650}\
.tile .l{color:#5b6776;font-size:13px}\
table{border-collapse:collapse;width:100%;font-size:14px}th,td{text-align:left;padding:4px 8px;\
border-bottom:1px solid #eef1f4;vertical-align:top}.nw{white-space:nowrap}td.num,th.num{text-align:right;\
font-variant-numeric:tabular-nums}.pass{color:#1b5e20;font-weight:650}.fail{color:#b71c1c;\
font-weight:650}.muted{color:#5b6776}.ids{font-family:ui-monospace,monospace;font-size:13px;\
word-break:break-all}.legend span{display:inline-block;margin-right:14px}.sw{display:inline-block;\
width:10px;height:10px;margin-right:4px;border-radius:2px}svg text{font-size:11px;fill:#5b6776}\
footer{margin-top:40px;color:#5b6776;font-size:13px}";

/// Text for HTML, escaped (`&`, `<`, `>`, `"`, `'`).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn colour(status: &str) -> &'static str {
    STATUSES
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(OTHER_COLOUR, |(_, c)| c)
}

/// A tile: a number with its label, readable back by `data-key`.
fn tile(key: &str, value: u64, label: &str) -> String {
    format!(
        "<div class=\"tile\" data-key=\"{key}\" data-value=\"{value}\"><span class=\"n\">{value}\
         </span><span class=\"l\">{}</span></div>",
        esc(label)
    )
}

fn ids(list: &[String], total: u64) -> String {
    let shown: Vec<String> = list.iter().take(IDS_SHOWN).map(|i| esc(i)).collect();
    let more = total.saturating_sub(shown.len() as u64);
    let mut out = format!("<p class=\"ids\">{}", shown.join(", "));
    if more > 0 {
        let _ = write!(out, " <span class=\"muted\">and {more} more</span>");
    }
    out + "</p>"
}

/// The page.
pub fn render(r: &Report, generated_by: &str) -> String {
    let s = &r.status;
    let mut h = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Erasure report: {job}</title><style>{STYLE}</style></head><body>\
         <header><h1>Erasure report: job {job}</h1><p class=\"sub\">As of {now}, made by {by}. \
         Counts and event ids only: no subject id appears on this page.</p></header>",
        job = esc(&s.job),
        now = esc(&s.now),
        by = esc(generated_by),
    );
    verdicts(&mut h, r);
    summary(&mut h, s);
    per_day(&mut h, &r.per_day);
    latency(&mut h, &r.latency, s);
    pending(&mut h, s);
    held(&mut h, s);
    runs(&mut h, &r.runs);
    h.push_str(
        "<footer>How to read this page: a request is an event of the erasure-event dataset. \
         It is <b>confirmed</b> once a run's confirmation names it (erased: rows removed; \
         no_data: no table held its subject; no_rule: no table has a rule for its subject \
         type), <b>held</b> while a legal hold or a table's exemption keeps some of its rows \
         (it is confirmed again once erased), and <b>pending</b> until then. Per day, a \
         request counts once per status, on the day that status was first confirmed. Times \
         to confirmation run from the request to its first confirmation; percentiles are \
         nearest-rank. A run verifies when <code>lakepurge verify</code> passes on its \
         manifest: fields, hash chain, arithmetic, every file it names, its confirmations, \
         and the signature when a public key was given.</footer></body></html>\n",
    );
    h
}

fn verdicts(h: &mut String, r: &Report) {
    h.push_str("<section id=\"verdicts\">");
    let failing = r.runs_failing();
    let (class, text) = match (r.runs.len(), failing) {
        (0, _) => ("warn", "No run has written a manifest yet.".to_string()),
        (n, 0) => ("good", format!("All {n} run manifests verify.")),
        (n, f) => (
            "bad",
            format!("{f} of {n} run manifests FAIL verification."),
        ),
    };
    let _ = write!(
        h,
        "<div class=\"verdict {class}\" data-key=\"runs_failing\" data-value=\"{failing}\">{text}</div>"
    );
    let unsigned = r
        .runs
        .iter()
        .filter(|r| r.signature == SignatureState::Unsigned)
        .count();
    if unsigned > 0 {
        let _ = write!(
            h,
            "<div class=\"verdict warn\" data-key=\"runs_unsigned\" data-value=\"{unsigned}\">\
             {unsigned} of {} run manifests are not signed: their authenticity rests on the hash \
             chain alone.</div>",
            r.runs.len()
        );
    }
    if let Some(l) = &r.status.late {
        let sla = age(l.sla_seconds as i64);
        let (class, text) = match l.count {
            0 => ("good", format!("SLA {sla}: no pending request is older.")),
            n => (
                "bad",
                format!("SLA {sla}: {n} pending requests are older (late)."),
            ),
        };
        let _ = write!(
            h,
            "<div class=\"verdict {class}\" data-key=\"late\" data-value=\"{}\" \
             data-sla-seconds=\"{}\">{text}</div>",
            l.count, l.sla_seconds
        );
        let lat = &r.latency;
        if let Some(over) = lat
            .within_sla
            .map(|w| lat.requests.saturating_sub(w))
            .filter(|o| *o > 0)
        {
            let _ = write!(
                h,
                "<div class=\"verdict warn\" data-key=\"confirmed_late\" \
                 data-value=\"{over}\">SLA {sla}: {over} of {} confirmed requests took longer \
                 than the SLA.</div>",
                lat.requests
            );
        }
    }
    h.push_str("</section>");
}

fn summary(h: &mut String, s: &Status) {
    h.push_str("<section id=\"summary\"><h2>Requests</h2><div class=\"tiles\">");
    for (key, value, label) in [
        ("events", s.events, "requests (events)"),
        ("confirmed", s.confirmed, "confirmed"),
        ("erased", s.erased, "erased"),
        ("no_data", s.no_data, "no data found"),
        ("no_rule", s.no_rule, "no rule for the type"),
        ("held", s.held.requests, "held"),
        ("pending", s.pending, "pending"),
    ] {
        h.push_str(&tile(key, value, label));
    }
    h.push_str("</div>");
    if s.skipped_rows > 0 {
        let _ = write!(
            h,
            "<p class=\"muted\" data-key=\"skipped_rows\" data-value=\"{0}\" \
             data-rows=\"{1}\">{0} of {1} rows of \
             the event dataset were skipped as malformed (no event id, subject type or subject \
             id).</p>",
            s.skipped_rows, s.rows
        );
    }
    h.push_str("</section>");
}

fn legend(h: &mut String, statuses: &[&str]) {
    h.push_str("<p class=\"legend\">");
    for st in statuses {
        let _ = write!(
            h,
            "<span><i class=\"sw\" style=\"background:{}\"></i>{}</span>",
            colour(st),
            esc(st)
        );
    }
    h.push_str("</p>");
}

/// Requests confirmed per day: stacked bars, and the table of the same numbers.
fn per_day(h: &mut String, days: &[Day]) {
    h.push_str("<section id=\"per-day\"><h2>Requests confirmed per day, by status</h2>");
    if days.is_empty() {
        h.push_str("<p class=\"muted\">No request has been confirmed yet.</p></section>");
        return;
    }
    let mut statuses: Vec<&str> = STATUSES.iter().map(|(s, _)| *s).collect();
    for d in days {
        for st in d.by_status.keys() {
            if !statuses.contains(&st.as_str()) {
                statuses.push(st);
            }
        }
    }
    statuses.retain(|st| days.iter().any(|d| d.by_status.contains_key(*st)));
    legend(h, &statuses);
    day_bars(h, days, &statuses);
    h.push_str("<details><summary>The numbers</summary><table><tr><th>day (UTC)</th>");
    for st in &statuses {
        let _ = write!(h, "<th class=\"num\">{}</th>", esc(st));
    }
    h.push_str("</tr>");
    for d in days {
        let _ = write!(h, "<tr data-day=\"{0}\"><td>{0}</td>", esc(&d.day));
        for st in &statuses {
            let n = d.by_status.get(*st).copied().unwrap_or(0);
            let _ = write!(
                h,
                "<td class=\"num\" data-status=\"{}\" data-count=\"{n}\">{n}</td>",
                esc(st)
            );
        }
        h.push_str("</tr>");
    }
    h.push_str("</table></details></section>");
}

/// The stacked bars of [`per_day`], one per day, `statuses` in drawing order.
/// The days drawn: every calendar day from the first to the last with a confirmation (a day
/// without one is an empty slot, so gaps show), at most the last [`DAYS_DRAWN`].
fn calendar(days: &[Day]) -> Vec<Day> {
    let date = |d: &Day| chrono::NaiveDate::parse_from_str(&d.day, "%Y-%m-%d").ok();
    let dated: Vec<(chrono::NaiveDate, &Day)> = days
        .iter()
        .filter_map(|d| date(d).map(|t| (t, d)))
        .collect();
    let (Some(first), Some(last)) = (
        dated.iter().map(|d| d.0).min(),
        dated.iter().map(|d| d.0).max(),
    ) else {
        return Vec::new();
    };
    let start = first.max(last - chrono::Days::new(DAYS_DRAWN as u64 - 1));
    let by_day: std::collections::BTreeMap<chrono::NaiveDate, &Day> = dated.into_iter().collect();
    start
        .iter_days()
        .take_while(|d| *d <= last)
        .map(|d| Day {
            day: d.format("%Y-%m-%d").to_string(),
            by_status: by_day
                .get(&d)
                .map(|x| x.by_status.clone())
                .unwrap_or_default(),
        })
        .collect()
}

/// Days drawn at most (the table below the chart lists every day).
const DAYS_DRAWN: usize = 366;

fn day_bars(h: &mut String, days: &[Day], statuses: &[&str]) {
    let days = &calendar(days);
    if days.is_empty() {
        return;
    }
    let (w, ht, left, bottom) = (1000.0_f64, 200.0_f64, 44.0_f64, 22.0_f64);
    let top = days
        .iter()
        .map(|d| d.by_status.values().sum::<u64>())
        .max()
        .unwrap_or(1)
        .max(1);
    let slot = (w - left) / days.len() as f64;
    let bar = (slot * 0.8).clamp(1.0, 48.0);
    let _ = write!(
        h,
        "<svg role=\"img\" aria-label=\"requests confirmed per day\" viewBox=\"0 0 {w} {}\" \
         width=\"100%\"><line x1=\"{left}\" y1=\"{ht}\" x2=\"{w}\" y2=\"{ht}\" stroke=\"#9aa5b1\"/>\
         <text x=\"{}\" y=\"12\" text-anchor=\"end\">{top}</text>\
         <text x=\"{}\" y=\"{ht}\" text-anchor=\"end\">0</text>",
        ht + bottom,
        left - 6.0,
        left - 6.0,
    );
    for (i, d) in days.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bar) / 2.0;
        let mut y = ht;
        for st in statuses {
            let n = d.by_status.get(*st).copied().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let bh = (ht - 4.0) * n as f64 / top as f64;
            y -= bh;
            let _ = write!(
                h,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{bh:.1}\" \
                 fill=\"{}\"><title>{} {}: {n}</title></rect>",
                colour(st),
                esc(&d.day),
                esc(st)
            );
        }
    }
    let label_every = days.len().div_ceil(10).max(1);
    for (i, d) in days.iter().enumerate().step_by(label_every) {
        let x = left + slot * (i as f64 + 0.5);
        let _ = write!(
            h,
            "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            ht + 15.0,
            esc(&d.day)
        );
    }
    h.push_str("</svg>");
}

/// A duration, or a dash.
fn dur(seconds: Option<i64>) -> String {
    match seconds {
        None => "–".into(),
        Some(s) if s < 0 => format!("−{}", age(-s)),
        Some(s) => age(s),
    }
}

fn latency(h: &mut String, l: &Latency, s: &Status) {
    h.push_str("<section id=\"latency\"><h2>Time from request to confirmation</h2>");
    if l.requests == 0 {
        h.push_str("<p class=\"muted\">No confirmed request with a known request time.</p>");
        latency_notes(h, l);
        h.push_str("</section>");
        return;
    }
    h.push_str("<div class=\"tiles\">");
    for (key, v, label) in [
        ("p50_seconds", l.p50_seconds, "median (p50)"),
        ("p95_seconds", l.p95_seconds, "p95"),
        ("max_seconds", l.max_seconds, "longest"),
    ] {
        let _ = write!(
            h,
            "<div class=\"tile\" data-key=\"{key}\" data-value=\"{}\"><span class=\"n\">{}</span>\
             <span class=\"l\">{label}</span></div>",
            v.map(|v| v.to_string()).unwrap_or_default(),
            dur(v)
        );
    }
    h.push_str(&tile(
        "latency_requests",
        l.requests,
        "confirmed requests measured",
    ));
    h.push_str("</div>");
    let sla = s.late.as_ref().map(|x| x.sla_seconds as i64);
    latency_bars(h, l, sla);
    if let (Some(within), Some(sla)) = (l.within_sla, sla) {
        let pct = 100.0 * within as f64 / l.requests as f64;
        let _ = write!(
            h,
            "<p data-key=\"within_sla\" data-value=\"{within}\" data-percent=\"{pct:.1}\">\
             {within} of {} confirmed requests ({pct:.1}%) were confirmed within the SLA of \
             {}.</p>",
            l.requests,
            age(sla)
        );
    }
    latency_notes(h, l);
    h.push_str("</section>");
}

/// The p50, p95 and longest times as bars, with the SLA (seconds) as a line.
fn latency_bars(h: &mut String, l: &Latency, sla: Option<i64>) {
    let top = l.max_seconds.unwrap_or(0).max(sla.unwrap_or(0)).max(1) as f64;
    let (w, left) = (1000.0_f64, 70.0_f64);
    let scale = |v: i64| left + (w - left - 20.0) * v as f64 / top;
    let _ = write!(
        h,
        "<svg role=\"img\" aria-label=\"time to confirmation\" viewBox=\"0 0 {w} 110\" width=\"100%\">"
    );
    for (i, (label, v)) in [
        ("p50", l.p50_seconds),
        ("p95", l.p95_seconds),
        ("longest", l.max_seconds),
    ]
    .into_iter()
    .enumerate()
    {
        let y = 8.0 + i as f64 * 26.0;
        let v = v.unwrap_or(0);
        let _ = write!(
            h,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{label}</text><rect x=\"{left}\" y=\"{y}\" \
             width=\"{:.1}\" height=\"18\" fill=\"#1565c0\"><title>{label}: {}</title></rect>",
            left - 6.0,
            y + 13.0,
            (scale(v) - left).max(1.0),
            dur(Some(v))
        );
    }
    if let Some(sla) = sla {
        let x = scale(sla);
        let anchor = if x > w - 60.0 { "end" } else { "middle" };
        let _ = write!(
            h,
            "<line x1=\"{x:.1}\" y1=\"2\" x2=\"{x:.1}\" y2=\"86\" stroke=\"#c62828\" \
             stroke-dasharray=\"4 3\" stroke-width=\"2\"/><text x=\"{x:.1}\" y=\"102\" \
             text-anchor=\"{anchor}\" style=\"fill:#c62828\">SLA {}</text>",
            age(sla)
        );
    }
    h.push_str("</svg>");
}

/// What the times leave out or cannot be trusted for.
fn latency_notes(h: &mut String, l: &Latency) {
    if l.negative > 0 {
        let _ = write!(
            h,
            "<p class=\"fail\" data-key=\"latency_negative\" data-value=\"{0}\">{0} requests \
             were confirmed before their request time (a clock or data error upstream): their \
             times are negative, and counted as they are.</p>",
            l.negative
        );
    }
    if l.unmeasured > 0 {
        let _ = write!(
            h,
            "<p class=\"muted\" data-key=\"latency_unmeasured\" data-value=\"{0}\">{0} \
             confirmed requests have no usable request time and are not measured.</p>",
            l.unmeasured
        );
    }
}

fn pending(h: &mut String, s: &Status) {
    let a = &s.pending_by_age;
    let _ = write!(
        h,
        "<section id=\"pending\"><h2>Pending requests by age</h2><p>Requests waiting for a \
         run to confirm them: {}.</p>",
        s.pending
    );
    let buckets = [
        ("under_1d", a.under_1d, "under 1 day"),
        ("from_1d_to_7d", a.from_1d_to_7d, "1 to 7 days"),
        ("from_7d_to_30d", a.from_7d_to_30d, "7 to 30 days"),
        ("over_30d", a.over_30d, "over 30 days"),
        ("unknown", a.unknown, "unknown age"),
    ];
    let top = buckets.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let (w, left) = (1000.0_f64, 110.0_f64);
    let _ = write!(
        h,
        "<svg role=\"img\" aria-label=\"pending requests by age\" viewBox=\"0 0 {w} 140\" width=\"100%\">"
    );
    for (i, (key, n, label)) in buckets.iter().enumerate() {
        let y = 4.0 + i as f64 * 27.0;
        let bw = (w - left - 80.0) * *n as f64 / top;
        let fill = if *key == "over_30d" || *key == "unknown" {
            "#c62828"
        } else {
            "#1565c0"
        };
        let _ = write!(
            h,
            "<g data-age=\"{key}\" data-count=\"{n}\"><text x=\"{}\" y=\"{}\" text-anchor=\"end\">\
             {label}</text><rect x=\"{left}\" y=\"{y}\" width=\"{bw:.1}\" height=\"20\" \
             fill=\"{fill}\"/><text x=\"{:.1}\" y=\"{}\">{n}</text></g>",
            left - 6.0,
            y + 14.0,
            left + bw + 6.0,
            y + 14.0
        );
    }
    h.push_str("</svg>");
    if let Some(o) = &s.oldest_pending {
        let _ = write!(
            h,
            "<p>Oldest pending: <span class=\"ids\">{}</span>, requested {} ({} ago).</p>",
            esc(&o.event_id),
            esc(&o.requested_at),
            age(o.age_seconds)
        );
    }
    if let Some(l) = s.late.as_ref().filter(|l| l.count > 0) {
        let _ = write!(
            h,
            "<p class=\"fail\">Late (older than the SLA of {}), oldest first:</p>",
            age(l.sla_seconds as i64)
        );
        h.push_str(&ids(&l.event_ids, l.count));
    }
    h.push_str("</section>");
}

fn held(h: &mut String, s: &Status) {
    let held = &s.held;
    if held.requests == 0 {
        return;
    }
    let _ = write!(
        h,
        "<section id=\"held\"><h2>Held requests</h2><p>Requests held: {}. Some of their rows are \
         kept under a legal hold or a table's exemption; each is confirmed again once its rows \
         are erased.{}</p>\
         <table><tr><th>basis</th><th class=\"num\">requests</th></tr>",
        held.requests,
        held.oldest_hold_placed_at
            .as_deref()
            .map(|t| format!(" The oldest hold was placed {}.", esc(t)))
            .unwrap_or_default()
    );
    for (basis, n) in &held.by_basis {
        let _ = write!(
            h,
            "<tr data-basis=\"{0}\" data-count=\"{n}\"><td>{0}</td><td class=\"num\">{n}</td></tr>",
            esc(basis)
        );
    }
    h.push_str("</table>");
    h.push_str(&ids(&held.event_ids, held.requests));
    h.push_str("</section>");
}

/// One table a run changed: its name and rows, readable back by its attributes.
fn table_change(t: &super::TableChange) -> String {
    let mut parts = vec![format!("{} removed", t.rows_removed)];
    if t.rows_redacted > 0 {
        parts.push(format!("{} redacted", t.rows_redacted));
    }
    if t.rows_held > 0 {
        parts.push(format!("{} held", t.rows_held));
    }
    format!(
        "<span data-table=\"{0}\" data-rows-removed=\"{1}\" data-rows-redacted=\"{2}\" \
         data-rows-held=\"{3}\">{0} <span class=\"muted\">({4})</span></span>",
        esc(&t.name),
        t.rows_removed,
        t.rows_redacted,
        t.rows_held,
        parts.join(", ")
    )
}

fn runs(h: &mut String, runs: &[Run]) {
    h.push_str(
        "<section id=\"runs\"><h2>Runs</h2><table><tr><th class=\"num\">#</th><th>run</th>\
         <th>finished</th><th class=\"num\">events</th><th class=\"num\">confirmed</th>\
         <th>tables changed</th><th class=\"num\">rows removed</th>\
         <th class=\"num\">rows redacted</th><th>manifest</th><th>signature</th></tr>",
    );
    if runs.is_empty() {
        h.push_str("<tr><td colspan=\"10\" class=\"muted\">No run yet.</td></tr>");
    }
    for r in runs.iter().rev() {
        let tables: Vec<String> = r.tables_changed.iter().map(table_change).collect();
        let signature = match r.signature {
            SignatureState::Valid => "<span class=\"pass\">valid</span>",
            SignatureState::Invalid => "<span class=\"fail\">INVALID</span>",
            SignatureState::Unsigned => "<span class=\"muted\">unsigned</span>",
            SignatureState::NotChecked => "<span class=\"muted\">not checked</span>",
        };
        let _ = write!(
            h,
            "<tr data-run=\"{run}\" data-manifest=\"{manifest}\" data-sequence=\"{seq}\" \
             data-verified=\"{verified}\" data-rows-removed=\"{removed}\" \
             data-rows-redacted=\"{redacted}\" data-events=\"{events}\" \
             data-confirmations=\"{conf}\" data-tables-changed=\"{changed}\"><td class=\"num\">{seq}</td><td class=\"nw\">{run}</td>\
             <td class=\"nw\">{finished}</td><td class=\"num\">{events}</td><td class=\"num\">{conf}</td>\
             <td>{tables}</td><td class=\"num\">{removed}</td><td class=\"num\">{redacted}</td>\
             <td>{verdict}</td><td>{signature}</td></tr>",
            run = esc(r.run_id.as_deref().unwrap_or("?")),
            manifest = esc(&r.manifest),
            verified = r.verified,
            removed = r.rows_removed,
            redacted = r.rows_redacted,
            changed = r.tables_changed.len(),
            seq = r.sequence.map(|s| s.to_string()).unwrap_or_default(),
            finished = esc(r.finished_at.as_deref().unwrap_or("")),
            events = r.events,
            conf = r.confirmations,
            tables = if tables.is_empty() {
                "<span class=\"muted\">none</span>".to_string()
            } else {
                tables.join("<br>")
            },
            verdict = if r.verified {
                "<span class=\"pass\">verifies</span>"
            } else {
                "<span class=\"fail\">FAILS</span>"
            },
        );
        if !r.failed_checks.is_empty() {
            let _ = write!(
                h,
                "<tr class=\"checks\"><td></td><td colspan=\"9\" class=\"fail\">{}<br><span \
                 class=\"muted\">{}</span></td></tr>",
                esc(&r.manifest),
                r.failed_checks
                    .iter()
                    .map(|c| esc(c))
                    .collect::<Vec<_>>()
                    .join("<br>")
            );
        }
    }
    h.push_str("</table></section>");
}
