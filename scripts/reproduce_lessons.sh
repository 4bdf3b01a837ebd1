#!/usr/bin/env bash
# Reproduce every comparison and demonstration of the lessons into outputs/lessons/:
# each experiment's sweep, its report (table, figures, a verdict computed from the numbers)
# and every probe, then outputs/lessons/README.md with all of them. Every comparison is read
# over seeds (SEEDS of them, 5 by default: each setting's mean ± std and "in k of n seeds"),
# the bias-variance ones over 20 training sets each; about ten minutes on 2 cores.
#
#   scripts/reproduce_lessons.sh [OUT_DIR]      (default: outputs/lessons)
#   SEEDS=10 scripts/reproduce_lessons.sh        (more seeds per setting)
#   tensorboard --logdir outputs/lessons         (every run of every comparison)
set -euo pipefail

out=${1:-outputs/lessons}
seeds=${SEEDS:-5}
experiments=(weight_decay dropout bn_cnn optimizers lr_schedules l1_vs_l2 norms overfitting early_stopping
             bias_variance bias_variance_dropout)
probes=(dropout optim lr depth init norm)
rm -rf "$out"
mkdir -p "$out/probes"
start=$SECONDS

for name in "${experiments[@]}"; do
    echo "== experiment $name"
    # A sweep whose jobs diverge exits 1; the report says so, and the lessons go on.
    replicas=("seed=range($seeds)")
    [[ $name == bias_variance* ]] && replicas=()  # replicated already: 20 draws a setting
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
