"""The best point of a one-dimensional grid, and the next point to run when that best sits at an edge.

Shared by scripts/glue_grid_best.py (learning rates) and scripts/nerf_grid_best.py (omegas, and sine's learning
rate at an omega). Values are the grid's labels as text (e.g. "2e-3", "30"); a ladder is the ordered list of
labels the grid may grow along.
"""


def best(score):
    """The label with the highest score."""
    return max(score, key=score.get)


def next_past_edge(score, ladder):
    """The ladder's label one step past the edge where the best sits (below the lowest run or above the highest),
    or None when the best is interior, off the ladder, at the ladder's end, or that label has already run."""
    top = best(score)
    ran = sorted(score, key=float)
    i = ladder.index(top) if top in ladder else -1
    if top == ran[0] and i > 0 and ladder[i - 1] not in score:
        return ladder[i - 1]
    if top == ran[-1] and 0 <= i < len(ladder) - 1 and ladder[i + 1] not in score:
        return ladder[i + 1]
    return None


def table(score):
    """'L1 / L2 / .. = s1 / s2 / ..': every label run, in increasing order, and its score (two decimals)."""
    labels = sorted(score, key=float)
    return f"{' / '.join(labels)} = {' / '.join(f'{score[k]:.2f}' for k in labels)}"


def cli(score, argv):
    """Print the best label, or with `--next L1 L2 ..` the ladder's next label past an edge best (or nothing)."""
    if "--next" not in argv:
        print(best(score))
        return
    step = next_past_edge(score, argv[argv.index("--next") + 1:])
    if step:
        print(step)
