"""What the grader checks in a4_faithfulness, outside the student's process (see ``a1_gradcam.py``)."""

PROBES = {
    "test_softmax": """
export(original=target_softmax(model, x, target), masked=target_softmax(model, saliency[:, None] * x, target))
""",
    "test_ic_ad_add": """
export(main=ic_ad_add(model, x, saliency, target), ones=ic_ad_add(model, x, torch.ones_like(saliency), target),
       inverted=ic_ad_add(model, x, 1 - saliency, target),
       binary=ic_ad_add(model, x, (saliency > 0.5).float(), target))
""",
    "test_insertion_deletion": """
export(steps8=insertion_deletion(model, x, saliency, target, steps=8),
       inverted5=insertion_deletion(model, x, 1 - saliency, target, steps=5),
       flat4=insertion_deletion(model, x, torch.zeros_like(saliency), target, steps=4))
""",
    "test_energy": """
boxes = [torch.tensor([[2.0, 2.0, 9.0, 10.0]]) for _ in range(x.shape[0])]
mask = cc.metrics.batch_masks(boxes, (16, 16))
export(main=energy_in_box(saliency, mask), zero_map=energy_in_box(torch.zeros_like(saliency), mask),
       everything=energy_in_box(saliency + 0.1, torch.ones_like(mask)))
""",
}

ATOL = {"test_softmax": 1e-6, "test_ic_ad_add": 1e-3, "test_insertion_deletion": 1e-5, "test_energy": 1e-6}
