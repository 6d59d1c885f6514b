"""What the grader checks in a2_deeplift, outside the student's process (see ``a1_gradcam.py``)."""

PROBES = {
    "test_rescale": """
export(hand=rescale_multiplier(torch.tensor([2.0, -1.0, 3.0, 1.0, -0.5]), torch.tensor([1.0, -2.0, -1.0, 1.0, 0.5])))
export(no_change=rescale_multiplier(torch.tensor([-3.0, 2.0]), torch.tensor([-3.0, 2.0])),
       zeros=rescale_multiplier(torch.zeros(3), torch.zeros(3)))
torch.manual_seed(4)
zz, zz0 = torch.randn(50), torch.randn(50)
export(random=rescale_multiplier(zz, zz0))
""",
    "test_deeplift": """
export(main=deeplift_two_layer(head, A, target))
torch.manual_seed(3)
reference = torch.relu(torch.randn(1, K, h, w))
export(with_reference=deeplift_two_layer(head, A, target, reference),
       class0=deeplift_two_layer(head, A, torch.zeros_like(target)))
""",
    "test_summation": """
export(deeplift=summation_delta(cc.deeplift(head, A, target), head, A, target))
a = A.clone().requires_grad_(True)
(g,) = torch.autograd.grad(head(a).gather(1, target[:, None]).sum(), a)
export(grad_x_input=summation_delta(g * A, head, A, target),
       ones_reference=summation_delta(torch.zeros_like(A), head, A, target, torch.ones_like(A)))
""",
    "test_lift": """
export(main=lift_cam_alpha(cc.deeplift(head, A, target)))
torch.manual_seed(5)
export(random=lift_cam_alpha(torch.randn(2, 3, 4, 5)))
""",
}

ATOL = {"test_rescale": 1e-6, "test_deeplift": 1e-5, "test_summation": 1e-5, "test_lift": 1e-5}
