"""Human-readable step traces for terminals and logs."""

from __future__ import annotations

from .session import Session, Step


def format_step(step: Step) -> str:
    lines = [f"[step {step.step}] {step.action or '(no action)'}"
             + (" (revises an earlier drawing)" if step.revises else "")]
    if step.thought:
        lines.append(f"  thought: {step.thought}")
    for op in step.ops:
        coords = ", ".join(f"{c:.0f}" for c in op.source_coords)
        lines.append(f"  {op.kind} {op.label!r} on image {op.image_index} "
                     f"(source image {op.source_index} px: {coords})")
    if step.new_images:
        lines.append(f"  -> new image(s) {', '.join(map(str, step.new_images))}")
    if step.error:
        lines.append(f"  error: {step.error}")
    return "\n".join(lines)


def format_result(session: Session) -> str:
    return (f"answer: {session.answer}  [finish: {session.finish_reason}; {session.calls} model calls, "
            f"{len(session.images)} images]" + (f"\nerror: {session.error}" if session.error else ""))
