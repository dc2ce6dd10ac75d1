"""loss_curve.png: the run's training/validation loss, bpb and LR multiplier by step."""

from __future__ import annotations

from pathlib import Path

from akshara_hf.folders import PNG_SOFTWARE

from .facts import LOG_VALUES



def plot_loss_curve(log_history: list[dict], path: Path, title: str) -> Path | None:
    """loss_curve.png from the run's log (train/val loss, bpb on a second axis, LR multiplier below); None when
    the log has no loss at all. Drawn on an Agg canvas without pyplot, so no global backend state changes; written
    whole or not at all, never through a link (`akshara_hf.folders.replace_file`)."""
    import io

    from akshara_hf.folders import replace_file

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def series(key: str) -> tuple[list[int], list[float]]:
        points = [(r["step"], r[key]) for r in log_history if r.get(key) is not None]
        return [p[0] for p in points], [p[1] for p in points]

    curves = {key: series(key) for key in LOG_VALUES}
    if not any(curves[key][0] for key in ("loss", "eval_loss", "eval_bpb")):
        return None
    has_lrm = bool(curves["lrm"][0])
    fig = Figure(figsize=(8, 6 if has_lrm else 4.5), dpi=110)
    FigureCanvasAgg(fig)
    if has_lrm:
        ax, ax_lrm = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    else:
        ax, ax_lrm = fig.subplots(1, 1), None
    handles = []
    if curves["loss"][0]:
        handles += ax.plot(*curves["loss"], color="tab:blue", linewidth=1.2, label="training loss")
    if curves["eval_loss"][0]:
        handles += ax.plot(*curves["eval_loss"], color="tab:orange", marker="o", markersize=3, label="validation loss")
    ax.set_ylabel("loss (nats / token)")
    if curves["eval_bpb"][0]:
        ax_bpb = ax.twinx()
        handles += ax_bpb.plot(*curves["eval_bpb"], color="tab:green", marker="s", markersize=3, linestyle="--",
                               label="validation bpb")
        ax_bpb.set_ylabel("bits per byte")
    ax.legend(handles=handles, loc="upper right")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax_lrm is not None:
        ax_lrm.plot(*curves["lrm"], color="tab:gray")
        ax_lrm.set_ylabel("LR multiplier")
        ax_lrm.grid(alpha=0.3)
        ax_lrm.set_xlabel("step")
    else:
        ax.set_xlabel("step")
    fig.tight_layout()
    png = io.BytesIO()
    # the "Software" text chunk: a loss_curve.png is replaced without --overwrite only when it carries it (a figure of
    # the user's own is never replaced silently)
    fig.savefig(png, format="png", metadata={"Software": PNG_SOFTWARE})
    return replace_file(path, png.getvalue())
