"""A run's work as named steps, in the order they happen (the runner wraps them with the record):

    describe_data -> load_model -> score_base -> apply_method -> train -> evaluate -> score_retention

Each step reads the plan (harness.pipeline.runner.Plan: the checked config, the data already read) and fills
its part of the record's measured fields; `Laps` times each phase, so a phase's seconds are those
of its step. With several processes every rank runs the steps; rank 0 alone scores and writes.
"""
from __future__ import annotations

import logging

from transformers import set_seed

from harness import methods
from harness.config.checks import check_against_model
from harness.pipeline import evaluate, forgetting, heldout, measure, models
from harness.pipeline.distributed import Dist
from harness.pipeline.measure import Laps
from harness.pipeline.train import tokenize_examples, total_steps, train
from harness.pipeline.train_state import Checkpoints
from harness.record import atomic, env

log = logging.getLogger("harness")


class Recipe:
    def __init__(self, plan, loaded, tracker, dist: Dist, device):
        c = self.cfg = plan.cfg
        self.plan, self.loaded, self.tracker, self.dist, self.device = plan, loaded, tracker, dist, device
        self.dtype = models.compute_dtype(device, c.train.precision)
        # every method is evaluated at the same precision, whatever it trained in
        self.eval_dtype = evaluate.evaluation_dtype(c.eval.precision, c.train.precision, device)
        self.laps = Laps()
        self.out: dict = {"device": str(device), "processes": dist.world, "phase_seconds": self.laps.seconds}
        self.model = self.tok = self.prepared = self.base_scores = None
        self.predictions: dict = {}  # test set (or scoring/test set) -> one row per item, beside the record

    def run(self) -> dict:
        """Every step in order; returns the measured parts of the record (the predictions stay in
        self.predictions: they are written beside the record, not into it)."""
        for step in (self.describe_data, self.load_model, self.score_base, self.apply_method, self.train,
                     self.evaluate, self.score_retention):
            step()
        self.dist.barrier()
        return self.out

    def describe_data(self) -> None:
        plan, loaded = self.plan, self.loaded
        self.out["data"] = {
            "train_set": plan.train_set.name, "train": loaded.provenance, "train_examples": len(loaded.train),
            "validation": loaded.validation_info,
            "test": {n: {**meta, "evaluated": len(recs), "overlaps_training_data": n in plan.train_set.contaminates}
                     for n, (ts, recs, meta) in loaded.tests.items()}}
        self.laps("data")

    def load_model(self) -> None:
        c, dist = self.cfg, self.dist
        if dist.world > 1:  # rank 0 builds the cached model directory (GGUF conversion) alone
            if dist.main:
                models.local_or_hub(c.model, c.cache_dir)
            dist.barrier()
        set_seed(c.seed)
        self.model, self.tok, info = models.load(c.model, c.method, self.device, self.dtype, c.cache_dir)
        check_against_model(c, self.model)  # what only the loaded model tells: nothing is written yet
        self.out["model_info"] = info
        self.out["memory"] = {"weights_only": measure.current_memory(self.device)}
        self.laps("load")

    def score_base(self) -> None:
        """The base model's retention scores, before the method touches it (cached across runs)."""
        c = self.cfg
        if not c.forgetting.enabled:
            return
        if self.dist.main:
            info = self.out["model_info"]
            key = {"model": c.model.name, "path": info["resolved_path"], "weights": c.model.weights_source,
                   "quantization": info["quantization"], "dtype": info["dtype"], "device": self.device.type,
                   "sets": list(c.forgetting.test_sets), "limit": c.forgetting.limit,
                   "code_id": env.code_identity()["code_id"]}
            self.base_scores, self.out["forgetting_before_cached"] = forgetting.base_scores(
                self.model, self.tok, c.forgetting, c.train.prompt_style, self.device, c.cache_dir, key,
                task=c.task.name, precision=self.eval_dtype)
        self.dist.barrier()
        self.laps("forgetting_before")

    def apply_method(self) -> None:
        c = self.cfg
        set_seed(c.seed)
        ctx = methods.MethodContext(tokenizer=self.tok, model_ref=self.out["model_info"]["resolved_path"],
                                    device=self.device, gradient_checkpointing=c.train.gradient_checkpointing,
                                    total_steps=total_steps(c.train, len(self.loaded.train)))
        self.prepared = methods.apply(self.model, c.method, ctx)
        self.model = self.prepared.model
        trainable, total = methods.count_parameters(self.model)
        self.out["method_info"] = self.prepared.notes
        self.out["params"] = {"trainable": trainable, "total": total,
                              "trainable_pct": round(100.0 * trainable / total, 4)}
        self.laps("method")

    def train(self) -> None:
        c, plan, dist, out = self.cfg, self.plan, self.dist, self.out
        out["train_info"] = None
        if not plan.trains:
            self.laps("train")
            return
        style, cutoff = c.train.prompt_style, c.train.cutoff_len
        examples = tokenize_examples(self.loaded.train, self.tok, cutoff, c.train.train_on_inputs, style)
        # FSDP shards the parameters across ranks: no checkpoints there (a killed run starts over)
        checkpoints = Checkpoints(None if dist.fsdp else plan.paths.train_state, c.resume.every_steps,
                                  c.resume.every_minutes, dist.main)
        if c.resume.restart:  # start over from step 0
            checkpoints.clear()
            dist.barrier()
        val_examples = tokenize_examples(self.loaded.validation, self.tok, cutoff, c.train.train_on_inputs, style)
        host_before = measure.host_gflops(self.device)
        out["train_info"] = train(
            self.model, self.tok, examples, c.train, lr=c.method.lr, seed=c.seed, device=self.device,
            dtype=self.dtype, method_cfg=c.method, flops_per_token=plan.method.flops_per_param_token *
            out["params"]["total"], on_log=self.tracker.log, dist=dist, checkpoints=checkpoints,
            validate=(validate := self.validation_pass(val_examples)), vcfg=c.validation,
            save_full_to=str(plan.paths.checkpoint) if dist.fsdp else None)
        # the host's speed around the timed steps (harness.pipeline.measure.host_gflops): the gate's yardstick
        out["train_info"]["throughput"]["host_gflops"] = round((host_before + measure.host_gflops(self.device)) / 2, 2)
        kept = out["train_info"].get("validation_best") or {}
        if kept.get("kept_step") not in (None, kept.get("last_step")):
            # the record's per-example validation losses describe the weights the run ends with
            kept["loss_after_restore"] = round(validate(), 6)
        if c.validation.accuracy_items and dist.main:
            out["train_info"]["validation_accuracy"] = heldout.accuracy(
                self.model, self.tok, self.loaded.validation[:c.validation.accuracy_items], style, self.device,
                c.validation.batch_size, evaluate.max_new_tokens(c), precision=self.eval_dtype)
        out["memory"]["train"] = out["train_info"].pop("memory")
        if c.save or dist.fsdp:
            out["checkpoint"] = str(plan.paths.checkpoint)
            if dist.fsdp:  # Trainer gathered the sharded weights; rank 0 evaluates a full copy of them
                self.model = self.reload_fsdp()
            elif dist.main:
                atomic.replace_dir(plan.paths.checkpoint, self.prepared.save)
        self.laps("train")

    def validation_pass(self, val_examples):
        """The held-out loss pass Trainer calls every N steps (rank 0); each pass refills the record's
        validation_final with per-example losses (the study's selection noise)."""
        if not val_examples or not self.dist.main:
            return None
        return lambda: heldout.loss(self.model, self.tok, val_examples, self.cfg.validation.batch_size, self.device,
                                       self.dtype, detail=self.out.setdefault("validation_final", {}))

    def evaluate(self) -> None:
        c, out = self.cfg, self.out
        if not (self.dist.main and c.eval.enabled):
            return
        self.model.eval()
        out["eval_merged_adapters"] = self.plan.method.merges_for_eval and merge_for_eval(self.model)
        mem = measure.PhaseMemory(self.device).start()
        out["eval"], self.predictions, out["eval_info"] = self.evaluate_sets()
        out["memory"]["eval"] = mem.read()
        self.laps("eval")
        for scoring in c.eval.also:  # more scorings of the same trained model (a record row each)
            metrics, predictions, timing = self.evaluate_sets(scoring)
            out.setdefault("eval_also", {})[str(scoring)] = {"eval": metrics, "eval_info": timing}
            self.predictions.update({f"{scoring}/{name}": rows for name, rows in predictions.items()})
            self.laps(f"eval_{scoring}")

    def evaluate_sets(self, scoring=None) -> tuple[dict, dict, dict]:
        """Metrics and predictions of every test set, and the timing of the evaluation pass."""
        c, tests = self.cfg, self.loaded.tests
        metrics_by_set, predictions, timing = evaluate.evaluate_sets(
            self.model, self.tok, [(ts, recs) for ts, recs, _ in tests.values()], scoring or c.eval.scoring,
            evaluate.max_new_tokens(c), c.eval.batch_size, c.eval.num_beams,
            c.train.prompt_style, self.device, precision=self.eval_dtype, invariant=c.eval.batch_invariant)
        for name, (ts, recs, meta) in tests.items():
            metrics = metrics_by_set[name]
            metrics["approximate"] = bool(meta.get("approximate"))
            metrics["overlaps_training_data"] = name in self.plan.train_set.contaminates
            log.info("%s: %.1f%% (%d items, parse failures %.0f%%)", name, metrics["accuracy"], metrics["n"],
                     100 * metrics["parse_failure_rate"])
        log.info("evaluation: %d questions in %.1f s (%.2f q/s)", timing["questions"], timing["seconds"],
                 timing["questions_per_second"] or 0)
        return metrics_by_set, predictions, timing

    def score_retention(self) -> None:
        """Forgetting: the retention suite again, after training, against the base's scores."""
        c = self.cfg
        if not (self.dist.main and c.forgetting.enabled):
            return
        after = forgetting.score(self.model, self.tok, c.forgetting, c.train.prompt_style, self.device, c.cache_dir,
                                 task=c.task.name, precision=self.eval_dtype)
        self.out["forgetting"] = forgetting.summarise(self.base_scores, after)
        self.laps("forgetting_after")

    def reload_fsdp(self):
        """FSDP: Trainer saved the gathered full weights into the checkpoint; rank 0 loads them back as
        an ordinary model for evaluation (generation under FSDP would need all ranks in lockstep)."""
        from transformers import AutoModelForCausalLM
        ckpt, dist = self.plan.paths.checkpoint, self.dist
        if dist.main:
            self.model.config.save_pretrained(ckpt)
            self.tok.save_pretrained(ckpt)
        dist.barrier()
        if not dist.main:
            return self.model
        return AutoModelForCausalLM.from_pretrained(ckpt, dtype=self.dtype).to(self.device)


def merge_for_eval(model) -> bool:
    """Fold LoRA-like weights into the (unquantised) base for evaluation: the same function, without
    the adapter's extra matmuls per layer (DoRA recomputes a weight norm at every forward). The
    checkpoint was saved before; quantised bases are left alone (merging into 4/8 bits is lossy)."""
    if getattr(model.get_base_model(), "is_quantized", False):
        return False
    model.merge_adapter()
    return True
