"""The lecture's code, kept verbatim as test data (do not edit, do not import in fastjac).

Copied from /work/shared/spec/backprop-lecture.md ("Lecture 4 Part II:
Backpropagation", cell In [2]): every function definition from ``chain_rule``
to ``random_matrix``, character for character, with one omission: the
``if verbose:`` plotting branch of ``block_backtracking`` (it needs a display
and changes no result). The imports are the cell's, minus matplotlib and
sklearn, which only the plot and the driver script used.

Tests compare ``fastjac.dense`` (and through it ``fastjac.structured``) with
these functions. They are the lecture's, quirks included: float64 only, Python
loops, no max-shift in the softmax (NaN past exp overflow).
"""
# flake8: noqa
# fmt: off

import numpy as np
import numpy.random as rd

def chain_rule(Dg, Df, var_shape):
    # Computes the Jacobian D (g o f)
    dim = len(var_shape)
    Dg_axes = list(range(Dg.ndim-dim, Dg.ndim))
    Df_axes = list(range(dim))
    return np.tensordot(Dg, Df, axes=(Dg_axes, Df_axes))

# Compute the Jacobian blocks of X @ W + b

def DX_affine(X, W, b):
    # (d_{x_{i, j}} (X @ W))_{a, b} = e_a^T e_ie_j^T W e_b, so a,i slices equal W.T
    D = np.zeros((X.shape[0], W.shape[1], X.shape[0], X.shape[1]))
    for k in range(X.shape[0]):
        D[k,:,k,:]=W.T
    return D, X.shape

def DW_affine(X, W, b):
    # (d_{w_{i, j}} (X @ W))_{a, b} = e_a^T X e_ie_j^T e_b, so b, j slices equal x
    D = np.zeros((X.shape[0], W.shape[1], W.shape[0], W.shape[1]))
    for k in range(W.shape[1]):
        D[:,k,:,k]=X
    return D, W.shape

def Db_affine(X, W, b):
    # (d_{b_i} (1 @ b))_{a, b} = e_a^T 1 e_i^T e_b, so b, i slices are all ones
    D = np.zeros((X.shape[0], W.shape[1], b.shape[1]))
    for k in range(b.shape[1]):
        D[:,k,k]=1
    return D, b.shape
    
def logit(z):
    # This is vectorized
    return 1/(1+np.exp(-z))

def Dlogit(Z):
    # The Jacobian of the matrix logit
    D = np.zeros((Z.shape[0], Z.shape[1], Z.shape[0], Z.shape[1]))
    A = logit(Z) * logit(-Z)
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            D[i,j,i,j] = A[i,j]
    return D, Z.shape

def softmax(z):
    v = np.exp(z)
    return v / np.sum(v)

def matrix_softmax(Z):
    return np.apply_along_axis(softmax, 1, Z)

def Dmatrix_softmax(Z):
    D = np.zeros((Z.shape[0], Z.shape[1], Z.shape[0], Z.shape[1]))
    for k in range(Z.shape[0]):
        v = np.exp(Z[k,:])
        v = v / np.sum(v)
        D[k,:,k,:] = np.diag(v) - np.outer(v,v)
        #print(D[k,:,k,:])
    return D, Z.shape

def cross_entropy(P, Q):
    return -np.sum(P * np.log(Q))/P.shape[0]

def DQcross_entropy(P, Q):
    return - P * (1/Q)/P.shape[0], Q.shape

def nn_loss_closure(X, Y):
    # vars[0]=W_1, vars[1]=b_1, vars[2]=W_2, vars[3]=b_2
    # cross_entropy(Y, matrix_softmax(affine(logit(affine(X; W_1, b_1))); W_2, b_2))
    def f(var):
        return cross_entropy(Y, matrix_softmax((logit((X @ var[0]) + var[1]) @ var[2]) + var[3]))
    return f

def nn_loss_gradient_closure(X, Y):
    def df(var):
        # Activation of first layer
        Z1 = (X @ var[0]) + var[1]
        X2 = logit(Z1)
        
        # Activation of second layer
        Z2 = (X2 @ var[2]) + var[3]
        Q = matrix_softmax(Z2)
        
        # Backpropagation tells us we can immediately contract DQ DZ2
        D_Q, Qshape = DQcross_entropy(Y, Q)
        D_Z2, Z2shape = Dmatrix_softmax(Z2)
        back_prop2 = chain_rule(D_Q, D_Z2, Qshape)
        
        # Jacobians for phi_2
        D_X2, X2shape = DX_affine(X2, var[2], var[3])
        D_W2, W2shape = DW_affine(X2, var[2], var[3])
        D_b2, b2shape = Db_affine(X2, var[2], var[3])
        
        # Jacobian for psi_1
        D_Z1, Z1shape = Dlogit(Z1)
        back_prop1 = chain_rule(chain_rule(back_prop2, D_X2, X2shape), D_Z1, Z1shape)
        
        # Jacobians for phi_1
        D_W1, W1shape = DW_affine(X, var[0], var[1])
        D_b1, b1shape = Db_affine(X, var[0], var[1])
        
        # Compute all the gradients
        W1grad = chain_rule(back_prop1, D_W1, W1shape)
        b1grad = chain_rule(back_prop1, D_b1, b1shape)
        W2grad = chain_rule(back_prop2, D_W2, W2shape)
        b2grad = chain_rule(back_prop2, D_b2, b2shape)
        
        return [W1grad, b1grad, W2grad, b2grad]
    return df

def update_blocks(x,y,t):
    # An auxiliary function for backtracking with blocks of variables
    num_blocks = len(x)
    z = [None]*num_blocks
    for i in range(num_blocks):
        z[i] = x[i] + t*y[i]
    return z
                           
def block_backtracking(x0, f, dx, df0, alpha=0.1, beta=0.5, verbose=False):
    num_blocks = len(x0)
    
    delta = 0
    for i in range(num_blocks):
        delta = delta + np.sum(dx[i] * df0[i])
    delta = alpha * delta
    
    f0 = f(x0)
    
    t = 1
    x = update_blocks(x0, dx, t)
    fx = f(x)
    while (not np.isfinite(fx)) or f0+t*delta<fx:
        t = beta*t
        x = update_blocks(x0, dx, t)
        fx = f(x)
        
    # [omitted: the lecture's `if verbose:` branch, which prints (t, delta) and plots]
            
    return x, fx

def negate_blocks(x):
    # Helper function for negating the gradient of block variables
    num_blocks = len(x)
    z = [None]*num_blocks
    for i in range(num_blocks):
        z[i] = -x[i]
    return z

def block_norm(x):
    num_blocks=len(x)
    z = 0
    for i in range(num_blocks):
        z = z + np.sum(x[i]**2)
    return np.sqrt(z)

def random_matrix(shape, sigma=0.1):
    # Helper for random initialization
    return np.reshape(sigma*rd.randn(shape[0]*shape[1]), shape)
