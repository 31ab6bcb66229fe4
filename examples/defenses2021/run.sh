#!/bin/sh
# The detection experiments of docs/auditing.md and docs/defenses.md (fldetector, deepsight, freqfed, rflbat).
# Usage: sh examples/defenses2021/run.sh OUT_DIR [NAME...]   (from the repository root; runs one after another)
# Each run is detection_base.yaml plus the overrides below; detection figures are in OUT_DIR/NAME/summary.json and
# `python3 examples/defenses2021/fpr_clean.py OUT_DIR/NAME` prints recall and fpr_clean from audit.csv.
set -e
OUT=${1:?output folder}; shift
BASE="$(dirname "$0")/detection_base.yaml"
run() { name=$1; shift; python3 -m fedpoison run "$BASE" --quiet --out "$OUT/$name" "$@"; }
for name in ${@:-mean_backdoor freqfed_backdoor fld_backdoor fld_trim deepsight_backdoor rflbat_backdoor}; do
  case $name in
    mean_backdoor) run $name --set defense.name=mean ;;  # no defense: the backdoor's reach
    freqfed_backdoor) run $name --set defense.name=freqfed ;;
    rflbat_backdoor) run $name --set defense.name=rflbat ;;
    deepsight_backdoor) run $name --set defense.name=deepsight --set defense.ds_samples=2000 ;;
    # FLDetector flags from a full window (10 scores, from round 11 on): clean rounds 11-13, attack from 14.
    fld_backdoor) run $name --set audit.name=fldetector --set rounds=24 --set attack.start_round=14 ;;
    fld_trim) run $name --set audit.name=fldetector --set rounds=24 --set attack.start_round=14 \
                --set attack.name=fang_trim --set defense.name=median ;;
    # the same defenses against the boosted backdoor (model replacement, gamma = n / server lr = 30)
    mean_mr) run $name --set defense.name=mean --set attack.name=model_replacement ;;
    freqfed_mr) run $name --set defense.name=freqfed --set attack.name=model_replacement ;;
    rflbat_mr) run $name --set defense.name=rflbat --set attack.name=model_replacement ;;
    deepsight_mr) run $name --set defense.name=deepsight --set defense.ds_samples=2000 \
                    --set attack.name=model_replacement ;;
    fld_mr) run $name --set audit.name=fldetector --set rounds=24 --set attack.start_round=14 \
              --set attack.name=model_replacement ;;
    *) echo "unknown run $name" >&2; exit 2 ;;
  esac
done
