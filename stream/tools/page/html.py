"""The profile page as HTML: one self-contained document (inline CSS and SVG, no script, nothing
fetched), rendered with Jinja2 (HTML escaped by default) from :func:`stream.tools.page.view.build_view`.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from jinja2 import Environment
from markupsafe import Markup, escape

from stream.profile import DAILY_DAYS

__all__ = ["render_home", "render_message", "render_profile", "sentiment_chart"]

_CHART_W, _CHART_H, _BAR_GAP = 600, 120, 4
_DAYS = DAILY_DAYS

_ENV = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)

_STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Noto Sans CJK SC",
sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:960px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
.muted{color:#667085;font-size:13px} .card{background:#fff;border:1px solid #e4e7ec;
border-radius:8px;padding:14px 16px;margin:10px 0}
.tiles{display:flex;gap:10px;flex-wrap:wrap} .tile{flex:1;min-width:130px}
.tile b{display:block;font-size:22px}
.negative{background:#fde2e1} .positive{background:#dcf5e3} .neutral{background:#eceef2}
.badge{border-radius:10px;padding:1px 8px;font-size:12px;font-weight:600}
.clause{border-radius:4px;padding:1px 2px}
table{border-collapse:collapse;width:100%} td,th{text-align:left;padding:4px 8px;
border-bottom:1px solid #eef0f3;font-size:14px}
.chip{display:inline-block;background:#e8eefc;border-radius:12px;padding:2px 10px;margin:2px}
form.fix{display:inline} .notice{background:#fff7e0;border:1px solid #f5d77a}
.gone{font-style:italic;color:#8a5a00} .axis{display:flex;justify-content:space-between}
"""

_LAYOUT = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} · Portrait</title><style>{{ style }}</style></head>
<body><main>{{ body }}</main></body></html>"""

_HOME = _ENV.from_string("""<h1>Portrait profiles</h1>
<p class="muted">Type a user id to see why their profile says what it says.</p>
<form class="card" method="get" action="/users"><input name="id" placeholder="user id" required>
<button type="submit">Show profile</button></form>""")

_MESSAGE = _ENV.from_string("""<h1>{{ heading }}</h1><p>{{ message }}</p>
<p><a href="/">Look up another user</a></p>""")

_PROFILE = _ENV.from_string("""
<h1>Profile of {{ shown_id }}</h1>
<p class="muted">version {{ v.version }} · updated {{ v.updated_at }} · model {{ v.model_version }}</p>
{% if corrected %}<p class="card notice" id="corrected">Thank you: your correction of
{{ corrected }} was written to labels.v1.</p>{% endif %}
<div class="tiles">
 <div class="card tile">sentiment score<b id="score">{{ fmt(v.sentiment_score) }}</b>
  <span class="muted">-1 negative … +1 positive, decayed by event time</span></div>
 <div class="card tile">comments<b>{{ v.comment_count }}</b>
  <span class="muted">{% for k, s in v.label_shares.items() %}{{ k }} {{ pct(s) }}{{ " · " if not loop.last }}{% endfor %}</span></div>
 <div class="card tile">mixed share<b>{{ pct(v.mixed_share) }}</b>
  <span class="muted">comments with clauses of opposite polarity</span></div>
 <div class="card tile">purchase value<b>{{ "%.2f"|format(v.purchase_value_sum) }}</b>
  <span class="muted">{% for k, n in v.behavior_counts.items() %}{{ k }} {{ n }}{{ " · " if not loop.last }}{% endfor %}</span></div>
</div>
<h2>Sentiment by day</h2>
<div class="card">{{ chart }}<p class="muted">per UTC day (event time): (positive - negative) /
comments; the profile keeps the last 30 days</p></div>
{% if v.segments %}<h2>Segments</h2><div class="card" id="segments">{% for s in v.segments %}
<span class="chip">{{ s }}</span>{% endfor %}</div>{% endif %}
<h2>Interests</h2>
<div class="card"><table><tr><th>category</th><th>activity</th><th>sentiment</th>
<th>positive</th><th>negative</th></tr>
{% for i in v.interests %}<tr><td>{{ i.category }}</td><td>{{ "%.2f"|format(i.activity) }}</td>
<td>{{ fmt(i.sentiment_score) }}</td><td>{{ i.positive_count }}</td><td>{{ i.negative_count }}</td></tr>
{% else %}<tr><td colspan="5" class="muted">no categories yet</td></tr>{% endfor %}</table></div>
<h2>Recent comments</h2>
{% for c in v.recent_comments %}
<div class="card comment" id="comment-{{ loop.index0 }}" data-event-id="{{ c.event_id }}">
 <span class="badge {{ c.label }} verdict">{{ c.label }}</span>{% if c.mixed %}
 <span class="badge neutral">mixed</span>{% endif %}
 <span class="muted">{{ c.event_time }} · model {{ c.model_version }} ·
 {% for k, p in c.probabilities.items() %}{{ k }} {{ "%.2f"|format(p) }}{{ " · " if not loop.last }}{% endfor %}</span>
 {% if c.pieces %}<p class="text">{% for p in c.pieces %}{% if p.label %}<span class="clause {{ p.label }}" data-label="{{ p.label }}" title="clause: {{ p.label }}">{{ p.text }}</span>{% else %}{{ p.text }}{% endif %}{% endfor %}</p>
 {% elif c.text is not none %}<p class="text">{{ c.text }}</p>
 {% else %}<p class="gone">Text not available: {{ c.gone }}.</p>{% endif %}
 {% if c.text is not none %}<form class="fix" method="post" action="{{ base }}/corrections">
 <input type="hidden" name="event_id" value="{{ c.event_id }}">
 <label>the right label: <select name="corrected_label">{% for k in labels if k != c.label %}
 <option value="{{ k }}">{{ k }}</option>{% endfor %}</select></label>
 <button type="submit" class="wrong">Wrong verdict</button></form>{% endif %}
</div>
{% else %}<p class="muted">no comments yet</p>{% endfor %}
<p class="muted">Texts are read from their source records when the page loads; the profile
itself never stores them. JSON: <a href="/api{{ base }}">/api{{ base }}</a></p>
""")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:+.2f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def sentiment_chart(daily: list[dict[str, Any]]) -> str:
    """An inline SVG bar chart of the daily scores over the profile's 30-day window.

    Args:
        daily: ``view["daily"]`` (oldest first, ``day`` as ``YYYY-MM-DD``), at most 30 days.

    Returns:
        ``<svg>`` markup, 600 x 120 user units stretched to the page's width: one slot per day
        of the 30 up to the newest, a bar up (green) for a positive score, down (red) for a
        negative one, a grey tick for a day with events but no comment; each with a tooltip.
    """
    if not daily:
        return '<p class="muted">no events yet</p>'
    last = date.fromisoformat(daily[-1]["day"])
    width, mid = _CHART_W / _DAYS, _CHART_H / 2
    marks = [f'<line x1="0" y1="{mid}" x2="{_CHART_W}" y2="{mid}" stroke="#c9ced6"/>']
    for day in daily:
        slot = _DAYS - 1 - (last - date.fromisoformat(day["day"])).days
        if slot < 0:
            continue
        score = day["score"]
        height = 2.0 if score is None else max(2.0, abs(score) * (mid - 4))
        top = mid - height if (score or 0) >= 0 else mid
        colour = "#c9ced6" if score is None else ("#2e9e5b" if score >= 0 else "#d64541")
        tip = f"{day['day']}: {day['comments']} comments, score {_fmt(score)}"
        marks.append(f'<rect x="{slot * width + _BAR_GAP / 2:.1f}" y="{top:.1f}" '
                     f'width="{width - _BAR_GAP:.1f}" height="{height:.1f}" fill="{colour}">'
                     f"<title>{escape(tip)}</title></rect>")  # fmt: skip
    first = last - timedelta(days=_DAYS - 1)
    return (f'<svg id="chart" viewBox="0 0 {_CHART_W} {_CHART_H}" preserveAspectRatio="none" '
            f'width="100%" height="{_CHART_H}" role="img" aria-label="sentiment by day">'
            f'{"".join(marks)}</svg><div class="axis muted"><span>{first}</span>'
            f"<span>{last}</span></div>")  # fmt: skip


def _page(title: str, body: str) -> str:
    return _ENV.from_string(_LAYOUT).render(title=title, style=_STYLE, body=_markup(body))


def _markup(html: str) -> Markup:
    return Markup(html)  # noqa: S704  # rendered by the templates above, escaped there


def render_profile(view: dict[str, Any], *, shown_id: str, base: str,
                   corrected: str | None = None) -> str:  # fmt: skip
    """The profile page.

    Args:
        view: :func:`stream.tools.page.view.build_view` output.
        shown_id: The id as typed (before pseudonymisation).
        base: The page's path, e.g. ``/users/ana`` (forms post to ``{base}/corrections``).
        corrected: The event id just corrected (a thank-you line), or ``None``.
    """
    from models.contract.labels import LABELS

    body = _PROFILE.render(v=view, shown_id=shown_id, base=base, corrected=corrected,
                           chart=_markup(sentiment_chart(view["daily"])), labels=LABELS,
                           fmt=_fmt, pct=_pct)  # fmt: skip
    return _page(f"Profile of {shown_id}", body)


def render_home() -> str:
    """The start page: a form to look a user up."""
    return _page("Profiles", _HOME.render())


def render_message(heading: str, message: str) -> str:
    """A page with one message (not found, not ready, refused)."""
    return _page(heading, _MESSAGE.render(heading=heading, message=message))
