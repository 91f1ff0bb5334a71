r"""Discover the Lorenz equations from a trajectory with an S-MNN layer.

The Lorenz system (sigma = 10, rho = 28, beta = 8/3)::

    dx/dt = sigma (y - x),   dy/dt = x (rho - z) - y,   dz/dt = x y - beta z

is integrated with ``scipy.integrate.solve_ivp`` (DOP853, rtol = atol = 1e-12)
from a seeded random start, and sampled every ``dt``. The model is SINDy's:
``dX_d/dt = sum_j xi[d, j] theta_j(X)`` over the degree-2 polynomial library
``theta = (1, x, y, z, x^2, xy, xz, y^2, yz, z^2)``, 30 coefficients ``xi`` in
all, seven of them non-zero in the truth.

S-MNN formulation. The trajectory is cut into B windows of L samples that
share their end points (by default 20 time units at dt = 0.01: B = 20
windows of L = 100 samples). For window b the S-MNN unknowns are ``u[b, t, d, o]`` (order o = 0..O-1 of
dimension d at sample t), with one equation row per dimension and step::

    u[b, t, d, 1] = sum_j xi[d, j] theta_j(X_data[b, t])      (weight 1)

(the library is evaluated on the data window, so the coefficient matrix is
constant: 1 on the derivative of its own dimension, the same M for every
window), the initial value ``u[b, 0, d, 0] = X_data[b, 0, d]`` and S-MNN's
Taylor smoothness rows with step ``dt``. One call of
:func:`adapters.torch.ode_forward` solves all B windows (M is factored once,
B right-hand sides), and the loss is the mean squared error between
``u[..., 0]`` and the data. Because xi enters only the right-hand side, u is
affine in xi and the loss is a convex quadratic: the problem is well posed,
its minimiser differs from the true coefficients only by the S-MNN
discretisation error, which O = 4 orders with central smoothness rows make
small (about 4e-5 relative at dt = 0.01).

Conditioning. The library columns are far from orthogonal on the attractor
(x and y, 1 and z, z and z^2 are strongly correlated), which makes the raw
quadratic badly conditioned (Adam needs thousands of steps to reach percent
accuracy). The trainable parameters are therefore coordinates ``q`` in a basis
of the library that is orthonormal on the data: per equation,
``xi[d, S] = s_d R_S^{-1} q[d, S]`` with ``R_S^T R_S`` the Gram matrix of the
active library columns S over the data and ``s_d`` the RMS of dX_d/dt (a
finite-difference estimate). This is a fixed linear change of variables:
the model, its equations and the loss are unchanged, only the optimiser sees
a well-conditioned problem.

Sparsity. SINDy-style sequential thresholding: fit with Adam (cosine learning
rate decay), set every ``|xi[d, j]| < threshold`` to zero and remove it from
the library of that equation, re-fit the remaining terms (re-orthonormalised,
warm-started), and repeat until the set of terms no longer changes.

Usage::

    python examples/lorenz_discovery.py            # the demo (about a minute)
    python examples/lorenz_discovery.py --quick    # tiny sizes, for the tests
    python examples/lorenz_discovery.py --device cuda

Prints the discovered equations, the relative error of each of the seven true
coefficients and the number of spurious terms; writes ``lorenz_loss.png`` and
``lorenz_trajectories.png`` to ``examples/out/`` (``--out``).
"""

import argparse
import dataclasses
import pathlib
import sys
import time

import matplotlib

matplotlib.use("Agg")  # files only, no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402
from tqdm import tqdm  # noqa: E402

from adapters.torch import ode_forward  # noqa: E402

SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
DIM_NAMES = ("x", "y", "z")
TERM_NAMES = ("1", "x", "y", "z", "x^2", "x y", "x z", "y^2", "y z", "z^2")
N_TERMS = len(TERM_NAMES)

#: The true coefficients xi[d, j] of the Lorenz system in the library above.
TRUE_COEFFICIENTS = np.zeros((3, N_TERMS))
TRUE_COEFFICIENTS[0, TERM_NAMES.index("x")] = -SIGMA
TRUE_COEFFICIENTS[0, TERM_NAMES.index("y")] = SIGMA
TRUE_COEFFICIENTS[1, TERM_NAMES.index("x")] = RHO
TRUE_COEFFICIENTS[1, TERM_NAMES.index("y")] = -1.0
TRUE_COEFFICIENTS[1, TERM_NAMES.index("x z")] = -1.0
TRUE_COEFFICIENTS[2, TERM_NAMES.index("z")] = -BETA
TRUE_COEFFICIENTS[2, TERM_NAMES.index("x y")] = 1.0


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes and hyperparameters of one run (see ``--help`` for each)."""

    seed: int = 0
    dt: float = 0.01
    burn_in: float = 2.0
    duration: float = 20.0
    window: int = 100
    orders: int = 4
    central: bool = True
    steps: int = 300
    refit_steps: int = 200
    learning_rate: float = 0.05
    refit_learning_rate: float = 1e-3
    final_lr_ratio: float = 1e-3
    threshold: float = 0.1
    max_rounds: int = 4
    whiten: bool = True


QUICK = dict(duration=3.0, window=50, steps=30, refit_steps=15, max_rounds=1)


# ---------------------------------------------------------------------------
# data


def lorenz(t, state, sigma=SIGMA, rho=RHO, beta=BETA):
    """Right-hand side of the Lorenz system (for ``solve_ivp``)."""
    x, y, z = state
    return [sigma * (y - x), x * (rho - z) - y, x * y - beta * z]


def simulate(rhs, start, duration, dt, allow_partial=False):
    """Sample the solution of ``dX/dt = rhs(t, X)``, ``X(0) = start``, every ``dt``.

    Parameters
    ----------
    rhs : callable
        ``rhs(t, state) -> dstate/dt`` as for ``solve_ivp``.
    start : array_like, shape (3,)
    duration, dt : float
        Time span and sampling interval.
    allow_partial : bool
        Return the samples reached when the integration fails (e.g. a badly
        learned model that blows up) instead of raising RuntimeError.

    Returns
    -------
    ndarray, shape (round(duration / dt) + 1, 3)
        The states at t = 0, dt, 2 dt, ... (DOP853, rtol = atol = 1e-12);
        fewer rows if ``allow_partial`` and the integration failed.
    """
    n_samples = int(round(duration / dt)) + 1
    times = dt * np.arange(n_samples)
    solution = solve_ivp(rhs, (0.0, times[-1]), start, method="DOP853", t_eval=times,
                         rtol=1e-12, atol=1e-12)
    if not solution.success and not allow_partial:
        raise RuntimeError(f"solve_ivp failed: {solution.message}")
    return solution.y.T


def lorenz_data(config):
    """The training trajectory: a seeded random start, a burn-in onto the attractor."""
    rng = np.random.default_rng(config.seed)
    start = rng.uniform(-10.0, 10.0, size=3) + np.array([0.0, 0.0, 25.0])
    start = simulate(lorenz, start, config.burn_in, config.dt)[-1]
    return simulate(lorenz, start, config.duration, config.dt)


def polynomial_library(states):
    """Degree-2 monomials of (x, y, z): ``(..., 3) -> (..., 10)`` in TERM_NAMES order."""
    x, y, z = states[..., 0], states[..., 1], states[..., 2]
    return np.stack([np.ones_like(x), x, y, z, x * x, x * y, x * z, y * y, y * z, z * z],
                    axis=-1)


def cut_windows(trajectory, window):
    """Consecutive windows of ``window`` samples sharing their end points: (B, window, 3)."""
    if window < 2 or window > len(trajectory):
        raise ValueError(f"window must be in [2, {len(trajectory)}] samples; got {window}")
    starts = range(0, len(trajectory) - window + 1, window - 1)
    return np.stack([trajectory[s:s + window] for s in starts])


# ---------------------------------------------------------------------------
# model


class SparsePolynomialODE:
    """``dX_d/dt = sum_j xi[d, j] theta_j(X)`` with xi in data-orthonormal coordinates.

    ``xi[d, S_d] = s_d R_d^{-1} q[d, S_d]`` where S_d is the active set of
    library terms of equation d, ``R_d^T R_d`` the Gram matrix of those
    library columns over the data (mean over samples) and ``s_d`` a scale of
    dX_d/dt. Inactive terms are exactly zero. With ``whiten=False``, R_d is
    the diagonal of column RMS values instead (plain feature scaling).

    Parameters
    ----------
    library : ndarray, shape (N, 10)
        The library evaluated on all N data samples.
    derivative_scale : ndarray, shape (3,)
        ``s_d``.
    whiten : bool
        Orthonormalise (True) or only scale (False) the library columns.
    torch_kwargs : dict
        ``dtype`` and ``device`` of the tensors.
    """

    def __init__(self, library, derivative_scale, whiten, torch_kwargs):
        self._gram = library.T @ library / len(library)
        self._scale = np.asarray(derivative_scale, dtype=float)
        self._whiten = whiten
        self._kw = torch_kwargs
        self.q = torch.zeros((3, N_TERMS), requires_grad=True, **torch_kwargs)
        self.active = np.ones((3, N_TERMS), dtype=bool)
        self._set_basis(np.zeros((3, N_TERMS)))

    def _set_basis(self, xi):
        """Basis of the active terms; q set so that the model's xi equals ``xi``."""
        basis = np.zeros((3, N_TERMS, N_TERMS))
        q = np.zeros((3, N_TERMS))
        for d in range(3):
            s = np.flatnonzero(self.active[d])
            if s.size == 0:
                continue
            gram = self._gram[np.ix_(s, s)]
            if self._whiten:
                r = np.linalg.cholesky(gram).T  # upper triangular, R^T R = gram
            else:
                r = np.diag(np.sqrt(np.diag(gram)))
            basis[d][np.ix_(s, s)] = self._scale[d] * np.linalg.inv(r)
            q[d, s] = r @ xi[d, s] / self._scale[d]
        self._basis = torch.as_tensor(basis, **self._kw)
        with torch.no_grad():
            self.q.copy_(torch.as_tensor(q, **self._kw))

    def coefficients(self):
        """xi as a (3, 10) tensor (differentiable in q)."""
        return torch.einsum("dij,dj->di", self._basis, self.q)

    def coefficients_numpy(self):
        """xi as a (3, 10) NumPy array, inactive terms exactly zero."""
        xi = self.coefficients().detach().cpu().numpy().copy()
        xi[~self.active] = 0.0
        return xi

    def threshold(self, threshold):
        """Drop the active terms with ``|xi| < threshold``; True if the support changed."""
        xi = self.coefficients_numpy()
        keep = self.active & (np.abs(xi) >= threshold)
        changed = bool((keep != self.active).any())
        self.active = keep
        xi[~keep] = 0.0
        self._set_basis(xi)
        return changed


class WindowedSMNN:
    """The S-MNN system of every data window, solved in one batched call.

    Equation rows ``u[b, t, d, 1] = (theta(X[b, t]) @ xi^T)[d]``, initial
    values ``u[b, 0, d, 0] = X[b, 0, d]``, smoothness rows with step dt.

    Parameters
    ----------
    windows : ndarray, shape (B, L, 3)
    dt : float
    orders : int
        O, the orders u carries (derivatives 0..O-1); at least 2 (3 with
        central smoothness rows).
    central : bool
        Use S-MNN's central smoothness rows.
    torch_kwargs : dict
        ``dtype`` and ``device``.
    """

    def __init__(self, windows, dt, orders, central, torch_kwargs):
        _, length, dims = windows.shape
        coefficients = np.zeros((1, 1, dims, dims, orders))  # (B, T, E, D, O), broadcast
        coefficients[..., range(dims), range(dims), 1] = 1.0  # row d: 1 * u[t, d, 1]
        self.coefficients = torch.as_tensor(coefficients, **torch_kwargs)
        self.library = torch.as_tensor(polynomial_library(windows), **torch_kwargs)
        self.init_vars = torch.as_tensor(windows[:, :1, :, None], **torch_kwargs)
        self.steps = torch.full((length - 1,), dt, **torch_kwargs)
        self.target = torch.as_tensor(windows, **torch_kwargs)
        self.central = central

    def solve(self, xi):
        """Order-0 solution u[..., 0] of every window, shape (B, L, 3)."""
        rhs = self.library @ xi.T  # (B, L, E = 3)
        u = ode_forward(self.coefficients, rhs, self.init_vars, self.steps,
                        enable_central_smoothness=self.central)
        return u[..., 0]

    def loss(self, xi):
        """Mean squared error between the S-MNN solution and the data."""
        return (self.solve(xi) - self.target).square().mean()


# ---------------------------------------------------------------------------
# training


def fit(model, system, n_steps, learning_rate, final_lr_ratio, description, losses):
    """Adam with cosine learning-rate decay on the model's active coordinates."""
    optimizer = torch.optim.Adam([model.q], lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=n_steps, eta_min=learning_rate * final_lr_ratio)
    bar = tqdm(range(n_steps), desc=description, leave=True, mininterval=0.5)
    for _ in bar:
        optimizer.zero_grad()
        loss = system.loss(model.coefficients())
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3e}", refresh=False)
    bar.close()


def discover(config, system, model):
    """Fit, then sequentially threshold and re-fit until the terms stop changing.

    Returns
    -------
    losses : list of float
        The loss at every Adam step.
    round_ends : list of int
        Step index at the end of each fit.
    """
    losses, round_ends = [], []
    n_rounds = 1 + config.max_rounds
    for fit_round in range(n_rounds):
        first = fit_round == 0
        n_active = int(model.active.sum())
        fit(model, system,
            config.steps if first else config.refit_steps,
            config.learning_rate if first else config.refit_learning_rate,
            config.final_lr_ratio,
            f"fit {fit_round + 1} ({n_active:2d} terms)", losses)
        round_ends.append(len(losses))
        if fit_round == n_rounds - 1 or not model.threshold(config.threshold):
            break
    return losses, round_ends


# ---------------------------------------------------------------------------
# reporting


def format_equations(xi, digits=4):
    """``dx/dt = -9.9998 x + 9.9998 y`` lines from a (3, 10) coefficient array."""
    lines = []
    for d, name in enumerate(DIM_NAMES):
        terms = []
        for j in np.flatnonzero(xi[d]):
            value = xi[d, j]
            sign = "-" if value < 0 else "+"
            magnitude = f"{abs(value):.{digits}f}"
            term = magnitude if TERM_NAMES[j] == "1" else f"{magnitude} {TERM_NAMES[j]}"
            terms.append((sign, term))
        if not terms:
            body = "0"
        else:
            body = ("-" if terms[0][0] == "-" else "") + terms[0][1]
            body += "".join(f" {sign} {term}" for sign, term in terms[1:])
        lines.append(f"d{name}/dt = {body}")
    return lines


def coefficient_errors(xi, truth=TRUE_COEFFICIENTS):
    """Relative errors of the true terms and counts of spurious and missed terms.

    Returns
    -------
    rows : list of (str, float, float, float)
        (term, true value, learned value, relative error) per true term.
    n_spurious : int
        Terms that are zero in the truth but not in ``xi``.
    n_missed : int
        True terms that ``xi`` sets to zero.
    """
    rows = []
    for d, j in zip(*np.nonzero(truth)):
        label = f"d{DIM_NAMES[d]}/dt: {TERM_NAMES[j]}"
        rows.append((label, truth[d, j], xi[d, j], abs(xi[d, j] - truth[d, j]) / abs(truth[d, j])))
    n_spurious = int(np.count_nonzero((truth == 0) & (xi != 0)))
    n_missed = int(np.count_nonzero((truth != 0) & (xi == 0)))
    return rows, n_spurious, n_missed


def plot_loss(losses, round_ends, path):
    """Loss per Adam step (log scale), thresholding steps marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.semilogy(np.arange(1, len(losses) + 1), losses, lw=1.2)
    for end in round_ends[:-1]:
        ax.axvline(end, color="0.5", ls="--", lw=0.8)
    ax.set_xlabel("Adam step (dashed: sequential thresholding)")
    ax.set_ylabel("MSE of S-MNN solution vs data")
    ax.set_title("Lorenz discovery: training loss")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_trajectories(true, learned, dt, path):
    """The data and the learned model's trajectory from the same start, 3-D and x(t)."""
    fig = plt.figure(figsize=(11.0, 4.6))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    ax.plot(*true.T, lw=0.8, label="data (true equations)")
    ax.plot(*learned.T, lw=0.8, ls="--", label="learned equations")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel("z")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Lorenz attractor, same initial state")
    ax = fig.add_subplot(1, 2, 2)
    ax.plot(dt * np.arange(len(true)), true[:, 0], lw=1.0, label="data")
    ax.plot(dt * np.arange(len(learned)), learned[:, 0], lw=1.0, ls="--", label="learned")
    ax.set_xlabel("t")
    ax.set_ylabel("x(t)")
    ax.legend(fontsize=8)
    ax.set_title("x(t): the chaotic system separates eventually")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------
# command line


def parse_args(argv=None):
    """Command-line options -> (argparse namespace, Config)."""
    defaults = Config()
    parser = argparse.ArgumentParser(
        description="Discover the Lorenz equations with an S-MNN layer (PyTorch) and "
                    "SINDy-style sequential thresholding. Prints the discovered equations, "
                    "the error of each true coefficient and the number of spurious terms; "
                    "writes PNG plots.")
    parser.add_argument("--quick", action="store_true",
                        help="tiny data and few steps (a smoke test, not accurate)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where the tensors live; cuda needs CuPy (the 'cuda' extra) "
                             "(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads for Numba and PyTorch; the per-step systems are "
                             "small, so 1 is fastest on a shared machine (default: %(default)s)")
    parser.add_argument("--out", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parent / "out",
                        help="directory for the PNG plots (default: examples/out)")
    parser.add_argument("--no-plots", action="store_true", help="skip the plots")
    group = parser.add_argument_group("data")
    group.add_argument("--seed", type=int, default=defaults.seed,
                       help="seed of the random initial state (default: %(default)s)")
    group.add_argument("--dt", type=float, default=defaults.dt,
                       help="sampling interval = S-MNN step (default: %(default)s)")
    group.add_argument("--duration", type=float, default=defaults.duration,
                       help="length of the training trajectory in time units "
                            "(default: %(default)s)")
    group = parser.add_argument_group("S-MNN")
    group.add_argument("--window", type=int, default=defaults.window,
                       help="samples per window, one S-MNN system each (default: %(default)s)")
    group.add_argument("--orders", type=int, default=defaults.orders,
                       help="orders O of u, derivatives 0..O-1 (default: %(default)s)")
    group.add_argument("--no-central", dest="central", action="store_false",
                       help="leave out the central smoothness rows (block tridiagonal M; "
                            "they are on by default)")
    group = parser.add_argument_group("optimisation")
    group.add_argument("--steps", type=int, default=defaults.steps,
                       help="Adam steps of the first fit, all 30 terms (default: %(default)s)")
    group.add_argument("--refit-steps", type=int, default=defaults.refit_steps,
                       help="Adam steps of each re-fit after thresholding "
                            "(default: %(default)s)")
    group.add_argument("--lr", type=float, default=defaults.learning_rate,
                       help="peak learning rate of the first fit, cosine decay "
                            "(default: %(default)s)")
    group.add_argument("--refit-lr", type=float, default=defaults.refit_learning_rate,
                       help="peak learning rate of the warm-started re-fits "
                            "(default: %(default)s)")
    group.add_argument("--threshold", type=float, default=defaults.threshold,
                       help="drop terms with |coefficient| below this (default: %(default)s)")
    group.add_argument("--max-rounds", type=int, default=defaults.max_rounds,
                       help="at most this many thresholding rounds (default: %(default)s)")
    group.add_argument("--no-whiten", dest="whiten", action="store_false",
                       help="optimise in a merely rescaled, not orthonormalised, library "
                            "basis (to see why the orthonormal basis matters)")
    args = parser.parse_args(argv)
    overrides = dict(seed=args.seed, dt=args.dt, duration=args.duration, window=args.window,
                     orders=args.orders, central=args.central, steps=args.steps,
                     refit_steps=args.refit_steps, learning_rate=args.lr,
                     refit_learning_rate=args.refit_lr, threshold=args.threshold,
                     max_rounds=args.max_rounds, whiten=args.whiten)
    # --quick shrinks whatever was left at its default
    if args.quick:
        for name, value in QUICK.items():
            if overrides[name] == getattr(defaults, name):
                overrides[name] = value
    return args, Config(**overrides)


def setup_runtime(args):
    """Thread counts and the torch device (or a clear error)."""
    if args.threads < 1:
        sys.exit(f"--threads must be at least 1; got {args.threads}")
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda: PyTorch sees no CUDA device")
        try:
            import cupy  # noqa: F401
        except ImportError:
            sys.exit("--device cuda needs CuPy: pip install -e '.[cuda]'")
    return dict(dtype=torch.float64, device=torch.device(args.device))


def main(argv=None):
    args, config = parse_args(argv)
    torch_kwargs = setup_runtime(args)
    t_start = time.perf_counter()

    trajectory = lorenz_data(config)
    windows = cut_windows(trajectory, config.window)
    library = polynomial_library(trajectory)
    derivative_scale = np.sqrt((np.gradient(trajectory, config.dt, axis=0) ** 2).mean(axis=0))
    print(f"Lorenz data: {len(trajectory)} samples, dt = {config.dt}, seed {config.seed}; "
          f"{len(windows)} windows of {config.window} samples, one batched S-MNN call "
          f"(O = {config.orders}, central rows {'on' if config.central else 'off'}, "
          f"float64, {args.device})")

    system = WindowedSMNN(windows, config.dt, config.orders, config.central, torch_kwargs)
    model = SparsePolynomialODE(library, derivative_scale, config.whiten, torch_kwargs)
    t_train = time.perf_counter()
    losses, round_ends = discover(config, system, model)
    t_train = time.perf_counter() - t_train
    xi = model.coefficients_numpy()

    print("\nDiscovered equations:")
    for line in format_equations(xi):
        print("  " + line)
    print("True equations:")
    for line in format_equations(TRUE_COEFFICIENTS):
        print("  " + line)

    rows, n_spurious, n_missed = coefficient_errors(xi)
    print(f"\n{'term':<14} {'true':>10} {'learned':>12} {'rel. error':>11}")
    for label, true, learned, err in rows:
        print(f"{label:<14} {true:>10.4f} {learned:>12.6f} {err:>11.2e}")
    mean_error = float(np.mean([row[3] for row in rows]))
    print(f"mean relative error of the {len(rows)} true coefficients: {mean_error:.3e} "
          f"({100 * mean_error:.4f} %)")
    print(f"spurious terms: {n_spurious}   missed terms: {n_missed}")
    print(f"Adam steps: {len(losses)} in {len(round_ends)} fits, final loss {losses[-1]:.3e}, "
          f"training {t_train:.1f} s ({1e3 * t_train / len(losses):.1f} ms/step)")

    if not args.no_plots:
        args.out.mkdir(parents=True, exist_ok=True)
        loss_path = args.out / "lorenz_loss.png"
        plot_loss(losses, round_ends, loss_path)
        learned = simulate(lambda t, s: xi @ polynomial_library(np.asarray(s)),
                           trajectory[0], config.duration, config.dt, allow_partial=True)
        trajectory_path = args.out / "lorenz_trajectories.png"
        plot_trajectories(trajectory, learned, config.dt, trajectory_path)
        print(f"plots: {loss_path}, {trajectory_path}")
    print(f"total {time.perf_counter() - t_start:.1f} s")
    return dict(coefficients=xi, mean_relative_error=mean_error, n_spurious=n_spurious,
                n_missed=n_missed, losses=losses)


if __name__ == "__main__":
    main()
