#!/bin/bash
# Every built-in recipe that runs on a CPU, applied to tiny random-weight checkpoints of each family
# (make_checkpoints.py), one `slimbench optimize` each; writes WORK_DIR/matrix.tsv: family, recipe, exit code,
# seconds, agreement with the source on the sample inputs (random weights give near-tied logits, so a low
# agreement says nothing about the recipe: --allow-degraded keeps those variants) and the error line if any.
# Token classifiers' variants are then measured (`slimbench bench`, entity F1 on tagged words): WORK_DIR/ner-bench.tsv;
# question answerers' (SQuAD F1): WORK_DIR/qa-bench.tsv; sequence-to-sequence models' (ROUGE-L): WORK_DIR/s2s-bench.tsv.
# Usage: bash run.sh WORK_DIR (FAMILIES="bert lm-llama ..." runs those alone; CLASSIFIER_RECIPES, LM_RECIPES,
# NER_RECIPES and S2S_RECIPES, given, replace the lists below)
set -u
work=$(realpath -m "$1"); mkdir -p "$work/logs"
here=$(dirname "$(realpath "$0")")
export HF_HUB_OFFLINE=1
python "$here/make_checkpoints.py" "$work/ckpt"
CLASSIFIER_RECIPES=${CLASSIFIER_RECIPES:-"baseline torch-int8 onnx-o2-int8 bf16 magnitude-50 pruned-l2-int8 sparse-2of4 torchao-int8wo compiled"}
LM_RECIPES=${LM_RECIPES:-"baseline bf16 onnx onnx-genai-int8 magnitude-50 torchao-int8wo bf16-static-cache"}
NER_RECIPES=${NER_RECIPES:-"$CLASSIFIER_RECIPES onnx-int8-static"}
S2S_RECIPES=${S2S_RECIPES:-"baseline bf16 onnx onnx-o2-int8 torchao-int8wo bf16-static-cache torch-int8 compiled magnitude-50 sparse-2of4"}
printf 'family\tvariant\tstatus\tentity_f1\treason\n' > "$work/ner-bench.tsv"
printf 'family\tvariant\tstatus\tsquad_f1\treason\n' > "$work/qa-bench.tsv"
printf 'family\tvariant\tstatus\trougeL\treason\n' > "$work/s2s-bench.tsv"
printf 'family\trecipe\texit\tseconds\tagreement\terror\n' > "$work/matrix.tsv"
for ckpt in "$work"/ckpt/*/; do
  family=$(basename "$ckpt")
  [[ -n "${FAMILIES:-}" && " $FAMILIES " != *" $family "* ]] && continue
  train=train.jsonl
  sample=()
  case $family in
    lm-*) recipes=$LM_RECIPES ;;
    ner-*) recipes=$NER_RECIPES train=ner-train.jsonl ;;
    qa-*) recipes=$NER_RECIPES train=qa-train.jsonl sample=(--sample-data "$work/ckpt/qa-eval.jsonl") ;;
    s2s-*) recipes=$S2S_RECIPES train=s2s-train.jsonl sample=(--sample-data "$work/ckpt/s2s-eval.jsonl") ;;
    *) recipes=$CLASSIFIER_RECIPES ;;
  esac
  for recipe in $recipes; do
    start=$(date +%s)
    slimbench optimize "$ckpt" --recipe "$recipe" --out "$work/models/$family" --train-data "$work/ckpt/$train" \
      "${sample[@]}" --allow-degraded > "$work/logs/$family.$recipe.log" 2>&1
    rc=$?
    agreement=$(python "$here/agreement.py" "$work/models/$family/$recipe/slimbench.json" 2>/dev/null)
    error=$(grep '^slimbench: error' "$work/logs/$family.$recipe.log" | cut -c19-400)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$family" "$recipe" "$rc" "$(( $(date +%s) - start ))" "${agreement:--}" "$error" | tee -a "$work/matrix.tsv"
  done
  if [[ $family == ner-* || $family == qa-* || $family == s2s-* ]]; then
    slimbench bench "$work/models/$family"/*/ --eval-data "$work/ckpt/${family%%-*}-eval.jsonl" --results "$work/bench-$family.jsonl" \
      --batch-sizes 1 --seq-lens 32 --min-reps 3 --min-seconds 0.2 --warmup 1 > "$work/logs/$family.bench.log" 2>&1
    python -c 'import json, sys
for line in open(sys.argv[2]):
    r = json.loads(line)
    print(sys.argv[1], r["variant"], r["status"], "%.4f" % r["metric"] if r.get("metric") is not None else "-",
          r.get("reason") or "", sep="\t")' "$family" "$work/bench-$family.jsonl" | tee -a "$work/${family%%-*}-bench.tsv"
  fi
done
