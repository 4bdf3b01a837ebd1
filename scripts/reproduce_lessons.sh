#!/usr/bin/env bash
# Reproduce every comparison and demonstration of the lessons into outputs/lessons/:
# each experiment's sweep as its config writes it (5 seeds a setting; the bias-variance ones
# 20 training sets a setting; double descent 4 training sets x 3 seeds a width and λ), its
# report (table, figures, a verdict computed from the numbers) and every probe, then
# outputs/lessons/README.md with all of them, and the numbers README.md and docs/lessons.md
# quote (scripts/lessons_text.py writes their blocks from these outputs, and docs/figures/).
# About ten minutes on 2 cores, and double descent's two and a half more.
#
#   scripts/reproduce_lessons.sh [OUT_DIR]          (default: outputs/lessons)
#   scripts/reproduce_lessons.sh --check [OUT_DIR]  (rerun all; fail, naming each number that
#                                                    differs from README.md or docs/lessons.md)
#   SEEDS=10 scripts/reproduce_lessons.sh           (other seeds: outputs only, docs untouched)
#   tensorboard --logdir outputs/lessons            (every run of every comparison)
set -euo pipefail

check=
if [[ ${1:-} == --check ]]; then check=--check; shift; fi
out=${1:-outputs/lessons}
experiments=(weight_decay dropout bn_cnn optimizers lr_schedules l1_vs_l2 norms overfitting early_stopping
             bias_variance bias_variance_dropout double_descent)
probes=(dropout optim lr depth init norm)
rm -rf "$out"
mkdir -p "$out/probes"
start=$SECONDS

for name in "${experiments[@]}"; do
    echo "== experiment $name"
    # A sweep whose jobs diverge exits 1; the report says so, and the lessons go on.
    replicas=()
    [[ -n ${SEEDS:-} && $name != bias_variance* && $name != double_descent ]] \
        && replicas=("seed=range($SEEDS)")
    regexp train -m "+experiment=$name" "${replicas[@]}" "hydra.sweep.dir=$out/$name" \
        > "$out/$name.log" 2>&1 || echo "   (some jobs did not complete: see $out/$name.log)"
    regexp report "$out/$name" > "$out/$name/report.txt"
    head -n 1 "$out/$name/report.md"
done
for name in "${probes[@]}"; do
    echo "== probe $name"
    regexp probe "$name" --out "$out/probes" > "$out/probes/$name.txt"
done

# outputs/lessons/README.md: each comparison with its command, verdict and figures.
{
    echo "# The lessons, reproduced"
    echo
    echo "Made by \`scripts/reproduce_lessons.sh\` in $((SECONDS - start)) s."
    echo "Each verdict is computed from the runs' numbers. See every run with"
    echo "\`tensorboard --logdir $out\`; docs/lessons.md says what to look at."
    for name in "${experiments[@]}"; do
        dir="$out/$name"
        echo
        echo "## $name"
        echo
        sed -n '2,/^$/p' "conf/experiment/$name.yaml" 2>/dev/null | sed -n 's/^# \{0,1\}//p' \
            | grep -v -e "^@package" -e "^  regexp " || true
        echo
        echo "\`regexp train -m +experiment=$name\`"
        echo
        echo "**Verdict:** $(head -n 1 "$dir/report.md")"
        echo
        for png in "$dir"/*.png "$dir"/*seed=0*/fit.png "$dir"/*seed=0*/decision_boundary.png; do
            [ -f "$png" ] || continue
            rel=${png#"$out"/}
            echo "![${rel%.png}]($rel)"
        done
        echo
        echo "<details><summary>the runs</summary>"
        echo
        tail -n +3 "$dir/report.md"
        echo
        echo "</details>"
    done
    for name in "${probes[@]}"; do
        echo
        echo "## probe $name"
        echo
        echo "\`regexp probe $name\`"
        echo
        echo '```'
        cat "$out/probes/$name.txt"
        echo '```'
        echo
        echo "![probe $name](probes/$name.png)"
    done
} > "$out/README.md"

echo "== done in $((SECONDS - start)) s: $out/README.md"
if [[ -n ${SEEDS:-} ]]; then
    echo "== SEEDS=$SEEDS: README.md and docs/lessons.md quote the configs' seeds; not written or checked"
    exit 0
fi
python "$(dirname "$0")/lessons_text.py" $check "$out"
