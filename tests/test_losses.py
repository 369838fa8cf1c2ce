import pytest
import torch
import torch.nn.functional as F

from lagnh_pyg import losses as L


def test_quantization_loss_and_sign_codes():
    z = torch.tensor([[0.5, -2.0], [0.0, 1.0]], requires_grad=True)
    b = L.sign_codes(z)
    assert b.tolist() == [[1.0, -1.0], [-1.0, 1.0]]
    loss = L.quantization_loss(z)
    torch.testing.assert_close(loss, torch.tensor((0.25 + 1.0 + 1.0 + 0.0) / 4))
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_reconstruction_loss_against_formula():
    torch.manual_seed(0)
    z = torch.randn(7, 4)
    s = torch.rand(7, 7)
    zn = z / z.norm(dim=1, keepdim=True)
    ref = ((zn @ zn.T).clamp_min(0) - 0.5 * s).pow(2).mean()
    torch.testing.assert_close(L.reconstruction_loss(z, s, mu=0.5), ref)
    torch.testing.assert_close(L.inner_product_reconstruction_loss(z, s), (z @ z.T / 4 - s).pow(2).mean())


def test_zero_rows_give_no_nan():
    z = torch.zeros(3, 4, requires_grad=True)
    loss = L.reconstruction_loss(z, torch.eye(3)) + L.quantization_loss(z)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_adversarial_losses():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -0.3])
    ref = F.binary_cross_entropy_with_logits(real, torch.ones(2)) + F.binary_cross_entropy_with_logits(fake, torch.zeros(2))
    torch.testing.assert_close(L.discriminator_loss(real, fake), ref)
    torch.testing.assert_close(L.adversarial_loss(fake), F.binary_cross_entropy_with_logits(fake, torch.ones(2)))


def test_semantic_loss_is_sigmoid_cross_entropy():
    logits = torch.tensor([[1.0, -2.0, 0.0]])
    y = torch.tensor([[1.0, 0.0, 0.5]])
    p = torch.sigmoid(logits)
    ref = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    torch.testing.assert_close(L.semantic_loss(logits, y), ref)


def test_total_objective():
    t = [torch.tensor(v) for v in (1.0, 2.0, 3.0, 4.0)]
    assert float(L.generator_loss(*t, lam=1, beta=100, alpha=0.1)) == pytest.approx(1 + 2 + 300 + 0.4)


@pytest.mark.parametrize("mu", [1.0, 0.5])
def test_reconstruction_loss_gradient_matches_autograd_through_the_formula(mu):
    """Eq. 9's hand-written backward gives autograd's gradient of the plain expression
    (negative cosines included, where max(0, .) stops the gradient)."""
    torch.manual_seed(1)
    z0 = torch.randn(40, 6)
    s = torch.rand(40, 40)
    s = (s + s.T) / 2
    z_ref = z0.clone().requires_grad_()
    zn = F.normalize(z_ref, dim=1)
    ref = ((zn @ zn.T).clamp_min(0) - mu * s).pow(2).mean()
    ref.backward()
    z = z0.clone().requires_grad_()
    loss = L.reconstruction_loss(z, s, mu=mu)
    loss.backward()
    assert (zn @ zn.T < 0).any()  # the clamp is exercised
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(z.grad, z_ref.grad, rtol=1e-5, atol=1e-7)
