"""What the grader checks in a1_gradcam, outside the student's process (``python -m cam_core course``).

``PROBES[test]`` runs in the sandbox after the student's notebook: it calls the student's functions
on fixed (seeded) inputs and ``export``s the raw results. The trusted grader runs the same probes on
the instructor's solution when the assignment is released and compares the two in its own process
(within ``ATOL[test]``; default 1e-5). A probe never computes a verdict: the student's kernel could
fake any verdict, but not the values without solving the exercise. Never released to students.
"""

PROBES = {
    "test_gradients": """
G = target_gradients(head, A, target)
export(G=G, A_after=A, A_requires_grad=A.requires_grad)
export(G_class0=target_gradients(head, A, torch.zeros_like(target)))
""",
    "test_gradcam": """
export(main=gradcam_alpha(target_gradients(head, A, target)))
torch.manual_seed(2)
g = torch.randn(3, 5, 4, 7)
export(random=gradcam_alpha(g), one_image=gradcam_alpha(g[1:2]))
""",
    "test_xgradcam": """
export(main=xgradcam_alpha(A, target_gradients(head, A, target)))
torch.manual_seed(3)
a = torch.rand(2, 3, 4, 4)
a[0, 1] = 0.0  # an all-zero map: 0, not NaN
export(zero_map=xgradcam_alpha(a, torch.randn(2, 3, 4, 4)))
""",
    "test_cam_map": """
res = cc.GradCAM(model, TARGET_LAYER)(x, target)
res_x = cc.XGradCAM(model, TARGET_LAYER)(x, target)
export(gradcam=cam_map(A, res.alpha), negative=cam_map(A, -res.alpha.abs() - 1),
       xgradcam=cam_map(A, res_x.alpha))
""",
}

ATOL = {"test_gradients": 1e-5, "test_gradcam": 1e-6, "test_xgradcam": 1e-5, "test_cam_map": 1e-5}
