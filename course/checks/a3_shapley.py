"""What the grader checks in a3_shapley, outside the student's process (see ``a1_gradcam.py``)."""

PROBES = {
    "test_game": """
export(full=coalition_value(head, A, target, torch.ones(K)),
       empty=coalition_value(head, A, target, torch.zeros(K)),
       some=coalition_value(head, A, target, torch.tensor([1, 0, 1, 0, 0, 1])))
""",
    "test_exact": """
for name, hd in heads.items():
    t = hd(A).argmax(dim=1)
    export(**{name: exact_shapley(hd, A, t),
              name + " delta": coalition_value(hd, A, t, torch.ones(K)) - coalition_value(hd, A, t, torch.zeros(K))})
torch.manual_seed(5)
hd3 = nn.Sequential(nn.Flatten(), nn.Linear(3 * h * w, 5), nn.ReLU(), nn.Linear(5, 2)).eval()
export(three_maps=exact_shapley(hd3, A[:, :3].contiguous(), torch.tensor([0, 1, 0])))
""",
    "test_permutation": """
export(twenty=permutation_shapley(head, A, target, cc.shapley.orderings(20, K, 0)),
       one=permutation_shapley(head, A, target, cc.shapley.orderings(1, K, 7)))
""",
    "test_slope": """
ps = np.array([3, 30, 300, 3000])
export(power_law=loglog_slope([1, 10, 100], [2.0, 0.2, 0.02]), measured=loglog_slope(PS, errors),
       noisy=loglog_slope(list(ps), list(5 * ps ** -0.5 * np.array([1.1, 0.9, 1.05, 1.0]))))
""",
    "test_lift_gap": """
export(gaps={name: lift_gap(hd, A, hd(A).argmax(dim=1)) for name, hd in heads.items()})
""",
}

ATOL = {"test_game": 1e-6, "test_exact": 1e-5, "test_permutation": 1e-5, "test_slope": 1e-9,
        "test_lift_gap": 1e-5}
